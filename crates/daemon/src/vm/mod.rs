//! The VM service, one file per verb (as youki's `libcontainer/src/container/`):
//!
//! * [`create`] — `vm.create` (reserve name, address and id, then start);
//! * [`start`] — `vm.start` and the start steps shared with create and restart;
//! * [`stop`] — `vm.stop` (graceful), `vm.kill`, `vm.restart`, and the runtime
//!   teardown every verb that ends a VM uses;
//! * [`delete`] — `vm.delete`, `vm.prune`;
//! * [`exec`] — `vm.exec` (a process relayed between the CLI and the guest agent);
//! * [`set`] — `vm.set`;
//! * [`query`] — `vm.list`, `vm.show`, `vm.ssh_info`, `vm.logs`, `vm.ports`,
//!   `vm.workspace_record`;
//! * [`stats`] — `vm.stats`;
//! * [`host_key`] — `vm.host_key` (a VM's pinned ssh host key, re-pinned from its
//!   agent on request);
//! * [`network`] — the `network` start step (bridge, NAT, isolation, DNS, the tap);
//! * [`reconcile`] — keeping records true (re-adoption on daemon start, the liveness
//!   monitor);
//! * shared machinery: [`stages`] (timed steps and the undo stack), [`backend`] (the
//!   only place naming QEMU or Firecracker), [`guest`] (readiness, shutdown, ports)
//!   and [`disks`].
//!
//! Concurrency: every verb that changes a VM holds that VM's lock
//! (`App::vm_lock(name)`) for its whole run, so operations on one VM serialise and
//! different VMs proceed in parallel; the monitor skips VMs whose lock is held.

pub mod backend;
pub mod boot_record;
pub mod create;
pub mod delete;
pub mod disks;
pub mod exec;
pub mod forward;
pub mod guest;
pub mod host_key;
pub(crate) mod network;
pub mod query;
pub mod reconcile;
pub mod set;
pub(crate) mod stages;
pub mod stall;
pub mod start;
pub mod stats;
pub mod stop;
pub mod userspace;

#[cfg(test)]
pub(crate) mod tests;

use crate::error::{DaemonError, Result};

/// Per-VM file names in the state directory (`state/vms/<id>/`).
pub mod files {
    /// Upper layer of the guest's /.
    pub const OVERLAY: &str = "overlay.ext4";
    /// The guest's /root.
    pub const WORK: &str = "work.ext4";
    /// The guest's pinned ssh host key (`TYPE BASE64`), written when its overlay
    /// (and the key in it) is made, or from its agent's report.
    pub const HOST_KEY: &str = "host_key.pub";
    /// OpenSSH ControlMaster socket, in the runtime directory.
    pub const SSH_CONTROL: &str = "ssh.ctl";
}

/// Refuse sizes outside what banger supports (the model's one check, which the CLI
/// also runs on its flags).
pub(crate) fn check_sizes(cpus: u32, memory_mib: u64, disk_mib: u64) -> Result<()> {
    banger_model::check_resources(Some(cpus), Some(memory_mib), Some(disk_mib))
        .map_err(|e| DaemonError::BadRequest(e.to_string()))
}
