//! VMM backends behind one trait.
//!
//! The daemon describes a machine once ([`MachineSpec`]) and gets back the transient
//! [`Handles`] it needs to find the machine again (pid, sockets), which it persists so
//! a restarted daemon can re-adopt running guests. Backends never touch the store.

pub mod accel;
pub mod console;
pub mod console_marks;
pub mod firecracker;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod tsc;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use accel::{Accel, AccelChoice};

/// Kernel arguments for a machine without PCI (QEMU's microvm, Firecracker): every
/// device is virtio-mmio. Without them the kernel's x86 PCI setup finds no config
/// space and prints `PCI: Fatal: No config space access function found` on every
/// boot, an error line that means nothing here but is the first thing a user (or a
/// boot-failure message quoting the console) sees. `pci=off` alone does not silence
/// it; skipping that one initcall does (measured with Debian's 6.1 kernel).
pub const NO_PCI_ARGS: &str = "initcall_blacklist=pci_arch_init";

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
    /// The device exists but reaches no host network (`tap` is ignored): a warm
    /// snapshot's template guest, whose restored copies each get their own tap.
    #[serde(default)]
    pub unplugged: bool,
    /// What carries the guest's frames on the host: a tap on banger's bridge (the
    /// default), or, in rootless mode, a user-space network stack.
    #[serde(default)]
    pub backend: NetBackend,
}

/// The host side of the guest's network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NetBackend {
    /// [`NetSpec::tap`], on banger's bridge (needs root or the root helper).
    #[default]
    Tap,
    /// A `passt` process listening on this unix socket (QEMU's `-netdev stream`):
    /// rootless networking with passt's NAT, DNS forwarding and port forwards.
    Stream {
        /// passt's socket (`passt --socket`).
        socket: PathBuf,
    },
    /// QEMU's built-in user-mode network stack (libslirp): the rootless fallback
    /// when passt is not installed.
    User {
        /// The guest's network, `a.b.c.d/n`.
        net: String,
        /// The address the stack answers as (the guest's gateway).
        host: std::net::Ipv4Addr,
        /// The stack's DNS forwarder (must differ from `host`).
        dns: std::net::Ipv4Addr,
        /// Host TCP ports forwarded into the guest.
        forwards: Vec<HostForward>,
    },
}

/// One host TCP port forwarded to a guest port by a user-space network stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostForward {
    /// Host address to listen on.
    pub host_ip: std::net::Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// The guest's address.
    pub guest_ip: std::net::Ipv4Addr,
    /// The guest's port.
    pub guest_port: u16,
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
    /// A saved guest state (a warm snapshot) to load instead of booting the kernel.
    /// The machine must be described exactly as when the state was saved (the disks
    /// may be copies, the tap and MAC may differ); the guest stays paused until
    /// [`Vmm::resume`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<PathBuf>,
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
    /// The VMM process's start time (clock ticks since boot, `/proc/<pid>/stat`
    /// field 22), recorded at launch so a reused pid is never taken for the VMM.
    /// `None` in handles written by older bangers: those are checked by pid and
    /// command line only, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// What the VMM's command line contains when it is not the control socket path:
    /// a jailed Firecracker is started with chroot-relative paths and recognised by
    /// its `--id banger-<vm id>` instead. `None`: the control socket path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Handles {
    /// The VMM process's identity: pid, the string its command line contains (the
    /// control socket path, or [`Handles::tag`]) and start time.
    pub fn identity(&self) -> process::Identity<'_> {
        process::Identity {
            pid: self.pid,
            tag: match &self.tag {
                Some(t) => t.as_str(),
                None => self.control_socket.to_str().unwrap_or_default(),
            },
            start_time: self.start_time,
        }
    }

    /// Whether the VMM process behind these handles is alive and is still the one
    /// that was launched (see [`process`]).
    pub fn vmm_alive(&self) -> bool {
        self.identity().alive()
    }
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
    /// Saving or loading a guest's state failed, or the backend cannot.
    #[error("snapshot: {0}")]
    Snapshot(String),
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
    /// The VMM opens the tap of `spec.net` by name itself.
    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError>;
    /// Whether this backend wants the guest's tap handed over already open
    /// ([`Vmm::launch_with_tap`]) rather than opening it by name: QEMU running as an
    /// unprivileged owner cannot open `/dev/net/tun` where it is root-only, so the
    /// root helper opens the tap and passes the descriptor, as libvirt does.
    fn takes_tap_fd(&self) -> bool {
        false
    }
    /// [`Vmm::launch`] with the guest's tap already open (a queue of `spec.net`'s tap,
    /// from `banger_helper::Privileged::open_tap`). Backends that open taps by name
    /// themselves ignore the descriptor.
    async fn launch_with_tap(
        &self,
        spec: &MachineSpec,
        tap: std::os::fd::OwnedFd,
    ) -> Result<Handles, VmmError> {
        drop(tap);
        self.launch(spec).await
    }
    /// Stop the VMM now (no guest cooperation): control-socket quit, then SIGKILL.
    async fn kill(&self, handles: &Handles) -> Result<(), VmmError>;
    /// Whether the VMM process behind `handles` is alive (and is still ours).
    fn is_alive(&self, handles: &Handles, vm_id: &str) -> bool;
    /// Wait up to `timeout` for the VMM behind `handles` to exit on its own (a guest
    /// powering off); true if it did. "Exited" is judged by the whole identity (pid,
    /// tag and start time): a reused pid whose command line happens to contain the
    /// tag is not mistaken for the VMM still running.
    async fn wait_exit(&self, handles: &Handles, timeout: Duration) -> bool {
        handles.identity().wait_exit(timeout).await
    }
    /// Save the running guest's memory and device state to the file `state` (created
    /// 0600); the guest is paused first and stays paused (the caller then kills the
    /// VMM). Backends that cannot refuse.
    async fn snapshot(
        &self,
        handles: &Handles,
        state: &Path,
        timeout: Duration,
    ) -> Result<(), VmmError> {
        let _ = (handles, state, timeout);
        Err(VmmError::Snapshot(format!(
            "the {} backend cannot save snapshots",
            self.name()
        )))
    }
    /// A VMM launched with [`MachineSpec::restore`]: wait until it has loaded the
    /// saved state, then let the guest run. Fails when the state could not be loaded
    /// (a corrupt or truncated file: QEMU exits).
    async fn resume(&self, handles: &Handles, timeout: Duration) -> Result<(), VmmError> {
        let _ = (handles, timeout);
        Ok(())
    }
    /// Remove the files this backend keeps in a VM's runtime directory once its VMM
    /// is gone (sockets, pid file). The console log stays: it is the VM's log.
    fn cleanup(&self, runtime_dir: &Path);
    /// Kill a VMM of this backend still running for `runtime_dir` although no handles
    /// name it (the daemon was killed between the launch and recording the handles,
    /// or the handles file was lost). Found by the control socket path on its command
    /// line, which names this VM's runtime directory. Returns how many were killed.
    async fn kill_orphans(&self, runtime_dir: &Path) -> usize {
        let _ = runtime_dir;
        0
    }
}

/// Remove `names` inside `dir`, ignoring those already gone.
fn remove_files(dir: &Path, names: &[&str]) {
    for n in names {
        let _ = std::fs::remove_file(dir.join(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handles(start_time: Option<u64>) -> Handles {
        Handles {
            backend: "qemu".into(),
            pid: std::process::id(),
            control_socket: PathBuf::from("/run/x/qmp.sock"),
            agent_socket: PathBuf::from("/run/x/agent.sock"),
            console_log: PathBuf::from("/run/x/console.log"),
            accel: Accel::Tcg,
            start_time,
            tag: None,
        }
    }

    #[test]
    fn old_handles_files_without_a_start_time_still_load() {
        let mut v = serde_json::to_value(handles(None)).unwrap();
        assert!(v.get("start_time").is_none());
        v.as_object_mut().unwrap().remove("start_time");
        let h: Handles = serde_json::from_value(v).unwrap();
        assert_eq!(h.start_time, None);
        let with: Handles =
            serde_json::from_value(serde_json::to_value(handles(Some(12345))).unwrap()).unwrap();
        assert_eq!(with.start_time, Some(12345));
    }

    #[test]
    fn a_recorded_start_time_that_differs_means_dead() {
        // This test process, tagged by its own executable path, with the wrong start time.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut h = handles(process::start_time(std::process::id()));
        h.control_socket = exe;
        assert!(h.vmm_alive());
        h.start_time = h.start_time.map(|t| t + 1);
        assert!(!h.vmm_alive());
        h.pid = 1;
        h.start_time = None;
        assert!(!h.vmm_alive());
    }

    #[tokio::test]
    async fn wait_exit_sees_a_reused_pid_as_the_vmm_gone() {
        // A live process whose command line contains the tag, but whose start time is
        // not the recorded one: the VMM exited and its pid was reused.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = std::time::Instant::now();
        while !process::alive_with_tag(pid, "sleep") && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = process::start_time(pid).unwrap();
        let mut h = handles(Some(started + 1));
        h.pid = pid;
        h.control_socket = PathBuf::from("sleep");
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Tcg,
            tsc_khz: 1,
        };
        assert!(
            q.wait_exit(&h, Duration::from_secs(3)).await,
            "a reused pid was taken for the VMM still running"
        );
        // The recorded start time: the process is the VMM, still running.
        h.start_time = Some(started);
        assert!(!q.wait_exit(&h, Duration::from_millis(200)).await);
        let _ = child.kill();
        let _ = child.wait();
        assert!(q.wait_exit(&h, Duration::from_secs(3)).await);
    }
}
