//! The methods: one type per method tying its wire name, params and result.
//!
//! The daemon registers a handler with `Router::add::<VmCreate>` and the CLI calls
//! `Client::call::<VmCreate>`: both sides name the same type, so the compiler, not a
//! string, connects a command to its handler, and a params or result change breaks
//! the build of both. [`METHODS`] is the pinned list of wire names: a daemon test
//! compares it with its router, and a test here pins the strings themselves (they are
//! the protocol).
//!
//! One file per resource: [`daemon`] (ping, operations), [`vm`], [`image`] (images
//! and the catalog), [`kernel`], [`network`] (bridge, DNS, ssh files, host keys).

pub mod daemon;
pub mod events;
pub mod exec;
pub mod image;
pub mod kernel;
pub mod network;
pub mod vm;

pub use daemon::*;
pub use events::*;
pub use exec::*;
pub use image::*;
pub use kernel::*;
pub use network::*;
pub use vm::*;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One RPC method: its wire name and the types of its params and result.
///
/// Implemented by unit marker types (`struct VmCreate;`): the CLI names one in
/// `client.call::<VmCreate>(..)`, the daemon passes one to `router.add(VmCreate, ..)`
/// (as a value, so the handler's param types are inferred from it).
pub trait Method: 'static {
    /// The wire name (`vm.create`).
    const NAME: &'static str;
    /// What the caller sends.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What the handler returns.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

/// Declare a method marker type and its [`Method`] impl.
macro_rules! method {
    ($(#[$doc:meta])* $ty:ident = $name:literal, $params:ty => $result:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $ty;
        impl $crate::methods::Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
        }
    };
}
pub(crate) use method;

/// Every method name, sorted (the order `Router::methods` returns).
pub const METHODS: &[&str] = &[
    CatalogList::NAME,
    EventsWatch::NAME,
    ImageBuild::NAME,
    ImageCachePrune::NAME,
    ImageDelete::NAME,
    ImageList::NAME,
    ImagePromote::NAME,
    ImagePull::NAME,
    ImageRegister::NAME,
    ImageShow::NAME,
    ImageWarm::NAME,
    ImageWarmList::NAME,
    ImageWarmRm::NAME,
    KernelDelete::NAME,
    KernelImport::NAME,
    KernelList::NAME,
    KernelPull::NAME,
    KernelShow::NAME,
    NetworkDown::NAME,
    NetworkShow::NAME,
    OperationsList::NAME,
    Ping::NAME,
    SshConfig::NAME,
    VmCreate::NAME,
    VmDelete::NAME,
    VmExec::NAME,
    VmHostKey::NAME,
    VmKill::NAME,
    VmList::NAME,
    VmLogs::NAME,
    VmPortForward::NAME,
    VmPorts::NAME,
    VmPrune::NAME,
    VmRestart::NAME,
    VmSet::NAME,
    VmShow::NAME,
    VmSshInfo::NAME,
    VmStart::NAME,
    VmStats::NAME,
    VmStop::NAME,
    VmWorkspaceRecord::NAME,
];

/// Params of methods that take none. Accepts `null`, a missing `params` or `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoParams {}

/// One progress line: which stage a long call has reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Stage name (`disks`, `boot`, ...).
    pub stage: String,
    /// Optional human detail (`copying work seed, 120 MiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds since the call started on the daemon.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_list_is_sorted_unique_and_complete() {
        let mut sorted = METHODS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, METHODS);
        assert_eq!(
            METHODS,
            [
                "catalog.list",
                "events.watch",
                "image.build",
                "image.cache_prune",
                "image.delete",
                "image.list",
                "image.promote",
                "image.pull",
                "image.register",
                "image.show",
                "image.warm",
                "image.warm_list",
                "image.warm_rm",
                "kernel.delete",
                "kernel.import",
                "kernel.list",
                "kernel.pull",
                "kernel.show",
                "network.down",
                "network.show",
                "operations.list",
                "ping",
                "ssh.config",
                "vm.create",
                "vm.delete",
                "vm.exec",
                "vm.host_key",
                "vm.kill",
                "vm.list",
                "vm.logs",
                "vm.port_forward",
                "vm.ports",
                "vm.prune",
                "vm.restart",
                "vm.set",
                "vm.show",
                "vm.ssh_info",
                "vm.start",
                "vm.stats",
                "vm.stop",
                "vm.workspace_record"
            ]
        );
    }
}
