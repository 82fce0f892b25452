//! Durable records: what a VM or image *is*. Transient handles (pids, taps,
//! sockets) are deliberately not here; they live with the daemon's runtime state.

use crate::name::VmName;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Lifecycle state of a VM as recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Reserved, disks being prepared or the VMM starting.
    Creating,
    /// The guest answered on ssh.
    Running,
    /// No VMM process; disks kept.
    Stopped,
    /// A step failed; `VmRecord::error` says which and why.
    Error,
}

impl VmState {
    /// Stable lower-case name, as stored in SQLite and shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        }
    }

    /// Inverse of [`VmState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => VmState::Creating,
            "running" => VmState::Running,
            "stopped" => VmState::Stopped,
            "error" => VmState::Error,
            _ => return None,
        })
    }
}

/// Which VMM backend runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmmChoice {
    /// Firecracker when it is installed, supported and KVM works; QEMU otherwise.
    #[default]
    Auto,
    /// QEMU microvm (KVM or TCG).
    Qemu,
    /// Firecracker (needs KVM).
    Firecracker,
}

impl VmmChoice {
    /// Lower-case name, as stored and typed.
    pub fn as_str(self) -> &'static str {
        match self {
            VmmChoice::Auto => "auto",
            VmmChoice::Qemu => "qemu",
            VmmChoice::Firecracker => "firecracker",
        }
    }
}

impl std::str::FromStr for VmmChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(VmmChoice::Auto),
            "qemu" => Ok(VmmChoice::Qemu),
            "firecracker" => Ok(VmmChoice::Firecracker),
            other => Err(format!(
                "unknown VMM {other:?}: use auto, qemu or firecracker"
            )),
        }
    }
}

/// Who is the guest's init: banger's agent (the fast init) or the image's systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitMode {
    /// banger's agent stays PID 1 (`banger.init=agent`): boots in a few seconds, runs
    /// the image's sshd if it has one, no other services.
    #[default]
    Agent,
    /// The image's `/sbin/init` (systemd) takes over (`banger.init=systemd`): services,
    /// timers, `systemctl`; slower to boot.
    Systemd,
}

impl InitMode {
    /// Lower-case name, as stored, typed and put on the kernel command line.
    pub fn as_str(self) -> &'static str {
        match self {
            InitMode::Agent => "agent",
            InitMode::Systemd => "systemd",
        }
    }
}

impl std::str::FromStr for InitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "agent" => Ok(InitMode::Agent),
            "systemd" => Ok(InitMode::Systemd),
            other => Err(format!("unknown init {other:?}: use agent or systemd")),
        }
    }
}

/// What an OCI image's config says about running commands in it (`docker inspect`'s
/// `Config`), recorded with the image and applied to every command banger runs there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `KEY=value` entries (ENV).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// CMD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// USER (`name`, `uid`, `name:group` or `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

impl RunConfig {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &RunConfig::default()
    }
}

/// A VM's durable intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Short random hex id; names the state and runtime directories.
    pub id: String,
    /// Unique name, also the guest hostname.
    pub name: VmName,
    /// Id of the image the VM was created from.
    pub image_id: String,
    /// Recorded lifecycle state.
    pub state: VmState,
    /// Guest IPv4 address, unique among VMs.
    pub ip: Ipv4Addr,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Work disk (/root) size in MiB.
    pub disk_mib: u64,
    /// Unix seconds at creation.
    pub created_at: i64,
    /// Why the VM is in `error`, if it is.
    pub error: Option<String>,
    /// The VMM backend asked for.
    #[serde(default)]
    pub vmm: VmmChoice,
    /// Op id of the call that created the VM: lets a client remove exactly the VM
    /// its own call made (never an older VM that happens to share the name).
    #[serde(default)]
    pub created_op: Option<String>,
    /// Who is the guest's init.
    #[serde(default)]
    pub init: InitMode,
}

/// A published, read-only base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Short random hex id; names `state/images/<id>/`.
    pub id: String,
    /// Unique, user-facing name (e.g. `debian-bookworm`).
    pub name: String,
    /// Where it came from (e.g. `debian:bookworm`).
    pub source: String,
    /// Kernel release of the image's own kernel (e.g. `6.1.0-40-cloud-amd64`).
    pub kernel_release: String,
    /// Size of rootfs.ext4 in bytes.
    pub size_bytes: u64,
    /// Unix seconds at publication.
    pub created_at: i64,
    /// Name of the kernel the image boots (a copy lives in the image directory, so
    /// removing the kernel later does not break the image). `None` for images made
    /// before kernels were tracked.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The image config's environment, entrypoint, command, user and working
    /// directory (OCI images; empty for images banger built).
    #[serde(default, skip_serializing_if = "RunConfig::is_empty")]
    pub run_config: RunConfig,
}

/// A kernel in the local kernel store: a kernel image plus banger's initrd built
/// for it (the initrd carries banger's init and the kernel's virtio/ext4/overlay
/// modules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// Short random hex id; names `state/kernels/<id>/`.
    pub id: String,
    /// Unique, user-facing name (e.g. `debian-bookworm`).
    pub name: String,
    /// Kernel release (`uname -r` in the guest), e.g. `6.1.0-40-cloud-amd64`.
    pub release: String,
    /// Where it came from (`image:debian-bookworm`, `file:/path`, `catalog:URL`).
    pub source: String,
    /// Size of the kernel image in bytes.
    pub size_bytes: u64,
    /// Unix seconds at import.
    pub created_at: i64,
}

/// A host repository shipped into a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// Repository root on the host.
    pub host_path: String,
    /// Where it lives in the guest (under /root).
    pub guest_path: String,
    /// The commit (HEAD) it was shipped at: exports diff against it.
    pub head: String,
    /// Unix seconds of the last prepare.
    pub prepared_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        for s in [
            VmState::Creating,
            VmState::Running,
            VmState::Stopped,
            VmState::Error,
        ] {
            assert_eq!(VmState::parse(s.as_str()), Some(s));
        }
        assert_eq!(VmState::parse("zombie"), None);
    }
}
