//! VMM backends behind one trait.
//!
//! The daemon describes a machine once ([`MachineSpec`]) and gets back the transient
//! [`Handles`] it needs to find the machine again (pid, sockets), which it persists so
//! a restarted daemon can re-adopt running guests. Backends never touch the store.

pub mod accel;
pub mod firecracker;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod tsc;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use accel::{Accel, AccelChoice};

/// The guest's serial console log in a VM's runtime directory, whatever the backend
/// (it outlives the VMM: `banger vm logs` reads it after a stop).
pub const CONSOLE_LOG: &str = "console.log";
pub use qemu::Qemu;

/// One disk attached to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Raw disk image on the host.
    pub path: PathBuf,
    /// Attach read-only (the shared base image).
    pub read_only: bool,
}

/// The guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// Host tap device (already created and attached to the bridge).
    pub tap: String,
    /// Guest MAC address.
    pub mac: String,
}

/// Everything a backend needs to start a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// VM id (tags the process so it can be recognised after a daemon restart).
    pub id: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Kernel image (bzImage for QEMU).
    pub kernel: PathBuf,
    /// Initrd, if any.
    pub initrd: Option<PathBuf>,
    /// Guest kernel command line from the daemon (backends append their own needs).
    pub cmdline: String,
    /// Disks in attach order.
    pub disks: Vec<DiskSpec>,
    /// Network interface, if any.
    pub net: Option<NetSpec>,
    /// Directory for sockets, pid file and console log (must exist).
    pub runtime_dir: PathBuf,
}

/// What is true about a launched guest right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handles {
    /// Backend name (`qemu`, `firecracker`).
    pub backend: String,
    /// VMM process id.
    pub pid: u32,
    /// VMM control socket (QMP or Firecracker API).
    pub control_socket: PathBuf,
    /// Host end of the guest agent channel.
    pub agent_socket: PathBuf,
    /// Guest serial console log.
    pub console_log: PathBuf,
    /// Accelerator in use.
    pub accel: Accel,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM binary is not installed.
    #[error("{}", banger_hostcheck::tools::install_advice(.0))]
    Missing(String),
    /// The VMM refused to start; its own message follows.
    #[error("the VMM failed to start: {0}")]
    Launch(String),
    /// The VMM started but we could not learn its pid.
    #[error("the VMM started but wrote no pid file at {0}")]
    NoPid(PathBuf),
    /// Talking to the VMM's control socket failed.
    #[error("VMM control socket {path}: {reason}")]
    Control {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An OS-level operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A VMM backend.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    /// Short backend name.
    fn name(&self) -> &'static str;
    /// Start the guest described by `spec`; returns once the VMM runs (not the guest).
    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError>;
    /// Stop the VMM now (no guest cooperation): control-socket quit, then SIGKILL.
    async fn kill(&self, handles: &Handles) -> Result<(), VmmError>;
    /// Whether the VMM process behind `handles` is alive (and is still ours).
    fn is_alive(&self, handles: &Handles, vm_id: &str) -> bool;
    /// Wait up to `timeout` for the VMM behind `handles` to exit on its own (a guest
    /// powering off); true if it did.
    async fn wait_exit(&self, handles: &Handles, timeout: Duration) -> bool {
        let tag = handles.control_socket.display().to_string();
        process::wait_exit(handles.pid, &tag, timeout).await
    }
    /// Remove the files this backend keeps in a VM's runtime directory once its VMM
    /// is gone (sockets, pid file). The console log stays: it is the VM's log.
    fn cleanup(&self, runtime_dir: &Path);
}

/// Remove `names` inside `dir`, ignoring those already gone.
fn remove_files(dir: &Path, names: &[&str]) {
    for n in names {
        let _ = std::fs::remove_file(dir.join(n));
    }
}
