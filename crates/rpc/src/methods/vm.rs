//! Methods of VMs: lifecycle, inspection, logs, stats, ports, ssh access, workspaces.

use super::{method, NoParams};
use banger_model::{InitMode, PortForward, VmName, VmRecord, VmState, VmmChoice, WorkspaceRecord};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

method!(
    /// `vm.create`: reserve, prepare and boot a VM (or only reserve it).
    VmCreate = "vm.create", VmCreateParams => VmInfo
);
method!(
    /// `vm.list`.
    VmList = "vm.list", NoParams => Vec<VmInfo>
);
method!(
    /// `vm.show`.
    VmShow = "vm.show", VmNameParams => VmInfo
);
method!(
    /// `vm.delete`: the VMM, tap, disks and record. Irreversible.
    VmDelete = "vm.delete", VmDeleteParams => ()
);
method!(
    /// `vm.ssh_info`: what the CLI needs to ssh into a running VM itself.
    VmSshInfo = "vm.ssh_info", VmNameParams => SshInfo
);
method!(
    /// `vm.start`: boot a stopped VM.
    VmStart = "vm.start", VmNameParams => VmInfo
);
method!(
    /// `vm.stop`: graceful (sync, poweroff, then force).
    VmStop = "vm.stop", VmNameParams => VmInfo
);
method!(
    /// `vm.restart`: stop then start.
    VmRestart = "vm.restart", VmNameParams => VmInfo
);
method!(
    /// `vm.kill`: force off now, no guest cooperation.
    VmKill = "vm.kill", VmNameParams => VmInfo
);
method!(
    /// `vm.prune`: delete every VM that is not running.
    VmPrune = "vm.prune", NoParams => PruneResult
);
method!(
    /// `vm.set`: resize a stopped VM.
    VmSet = "vm.set", VmSetParams => VmInfo
);
method!(
    /// `vm.logs`: the guest console from an offset.
    VmLogs = "vm.logs", VmLogsParams => VmLogsResult
);
method!(
    /// `vm.stats`: CPU, memory and disk use, measured on the host.
    VmStats = "vm.stats", VmNameParams => VmStatsResult
);
method!(
    /// `vm.ports`: TCP ports listening in the guest.
    VmPorts = "vm.ports", VmNameParams => VmPortsResult
);
method!(
    /// `vm.port_forward`: publish a host port (relayed to a guest port while the VM
    /// runs), or withdraw one.
    VmPortForward = "vm.port_forward", PortForwardParams => VmInfo
);
method!(
    /// `vm.workspace_record`: remember what the CLI shipped into a VM.
    VmWorkspaceRecord = "vm.workspace_record", WorkspaceParams => VmInfo
);

/// Params of `vm.create`. Every field is optional: the daemon fills defaults
/// (generated name, default image and sizes) so `{}` is a valid request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCreateParams {
    /// Name (and hostname); generated when absent.
    #[serde(default)]
    pub name: Option<VmName>,
    /// Image name; the default image when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Virtual CPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Guest memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Work disk size in MiB.
    #[serde(default)]
    pub disk_mib: Option<u64>,
    /// Reserve the VM (name, IP) but do not boot it.
    #[serde(default)]
    pub no_start: bool,
    /// VMM backend; the daemon's default (`BANGER_VMM`, else auto) when absent.
    #[serde(default)]
    pub vmm: Option<VmmChoice>,
    /// Who is the guest's init; the agent (fast init) when absent.
    #[serde(default)]
    pub init: Option<InitMode>,
    /// Host ports relayed to guest ports while the VM runs (`-p`).
    #[serde(default)]
    pub ports: Vec<PortForward>,
}

/// Result of `vm.ports`: TCP ports listening in the guest (from the guest agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPortsResult {
    /// VM name.
    pub name: String,
    /// Guest address (reach a port at `ip:port` from the host).
    pub ip: Ipv4Addr,
    /// Listening TCP ports, sorted.
    pub ports: Vec<u16>,
    /// Host ports relayed to the guest (`-p`, `vm port-forward`).
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// Rootless mode: `ip` is not reachable from the host; only `forwards` (and
    /// `ssh_port` for port 22) are.
    #[serde(default)]
    pub rootless: bool,
    /// Rootless mode: the loopback port forwarded to the guest's sshd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
}

/// Params of `vm.port_forward`: publish (or, with `remove`, withdraw) a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForwardParams {
    /// The VM's name.
    pub name: String,
    /// The mapping (for `remove`, only `host_ip` and `host_port` count).
    pub forward: PortForward,
    /// Withdraw it instead.
    #[serde(default)]
    pub remove: bool,
}

/// Params of `vm.workspace_record`: the repository the CLI just shipped into a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceParams {
    /// The VM's name.
    pub name: String,
    /// The workspace as shipped.
    pub workspace: WorkspaceRecord,
}

/// Params of `vm.delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDeleteParams {
    /// The VM's name.
    pub name: String,
    /// Delete it even while it runs (it is killed: no flush, no clean poweroff).
    /// Without it a running VM is refused and nothing changes.
    #[serde(default)]
    pub force: bool,
    /// Delete only if the VM was created by the call with this op id (answered with
    /// `not_found` otherwise). `vm run` uses it to clean up exactly what its own
    /// create made, never a same-named VM that existed before.
    #[serde(default)]
    pub created_op: Option<String>,
}

/// Params of `vm.set`: each present field changes; the disk can only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSetParams {
    /// The VM's name.
    pub name: String,
    /// New vCPU count.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// New memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// New work disk size in MiB (not smaller than today's).
    #[serde(default)]
    pub disk_mib: Option<u64>,
}

/// Params of `vm.logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLogsParams {
    /// The VM's name.
    pub name: String,
    /// Byte offset to read from; `None` means "the last 64 KiB" (or, with `since`,
    /// what was written since then).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Unix seconds: without `offset`, read from the first line written at or after
    /// this time (to the daemon monitor's precision, a few seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// A slice of the guest console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLogsResult {
    /// Console text (lossily decoded).
    pub data: String,
    /// Offset to ask for next time (`vm logs -f`).
    pub next_offset: u64,
}

/// Result of `vm.prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResult {
    /// Names of the deleted VMs.
    pub deleted: Vec<String>,
}

/// Resource use of one VM, measured on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatsResult {
    /// VM name.
    pub name: String,
    /// Lifecycle state.
    pub state: VmState,
    /// VMM CPU use over a short sample, in percent of one host CPU.
    pub cpu_percent: Option<f64>,
    /// VMM CPU time since it started, seconds.
    pub cpu_seconds: Option<f64>,
    /// VMM resident memory (guest RAM actually touched plus VMM overhead), bytes.
    pub rss_bytes: Option<u64>,
    /// Configured guest memory, MiB.
    pub memory_mib: u64,
    /// Host bytes allocated by the overlay disk (changes to /).
    pub overlay_bytes: u64,
    /// Host bytes allocated by the work disk (/root).
    pub work_bytes: u64,
    /// Configured work disk size, MiB.
    pub disk_mib: u64,
}

/// Params of methods addressing one VM by name (`vm.show`, `vm.delete`,
/// `vm.ssh_info`). A plain string, not a `VmName`: a malformed name simply
/// matches no VM, and the daemon answers `not_found` with a useful hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNameParams {
    /// The VM's name.
    pub name: String,
}

/// How long one lifecycle stage took, for `vm create` timing output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTiming {
    /// Stage name (`disks`, `boot`, `ssh`, ...).
    pub stage: String,
    /// Duration in milliseconds.
    pub ms: u64,
}

/// A VM as shown to users: the durable record plus live facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Short hex id.
    pub id: String,
    /// Name (and hostname).
    pub name: String,
    /// Lifecycle state (`creating`, `running`, `stopped`, `error` on the wire).
    pub state: VmState,
    /// Guest IPv4 address.
    pub ip: Ipv4Addr,
    /// Image name (falls back to the image id if the image is gone).
    pub image: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in MiB.
    pub disk_mib: u64,
    /// Unix seconds at creation.
    pub created_at: i64,
    /// Unix seconds when its current boot finished (while it runs); `now -
    /// started_at` is its uptime.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Why the VM is in `error`, if it is.
    #[serde(default)]
    pub error: Option<String>,
    /// VMM process id while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Stage durations of the call that produced this; for other calls, those of
    /// the VM's current (or last) boot.
    #[serde(default)]
    pub timings: Vec<StageTiming>,
    /// Host ports relayed to the guest while it runs.
    #[serde(default)]
    pub ports: Vec<PortForward>,
    /// The host repository shipped into the VM, if any.
    #[serde(default)]
    pub workspace: Option<WorkspaceRecord>,
    /// The VMM backend asked for (`auto`, `qemu`, `firecracker`).
    #[serde(default)]
    pub vmm: VmmChoice,
    /// The backend actually running it, while it runs.
    #[serde(default)]
    pub backend: Option<String>,
    /// Who is the guest's init (`agent` or `systemd`).
    #[serde(default)]
    pub init: InitMode,
    /// Rootless mode, while it runs: the loopback port forwarded to the guest's sshd
    /// (its address is private to its own network stack, not reachable from the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
}

impl VmInfo {
    /// Build from a store record; live facts (`pid`, `timings`) start empty for
    /// the daemon to fill in.
    pub fn from_record(rec: &VmRecord, image_name: &str) -> Self {
        Self {
            id: rec.id.clone(),
            name: rec.name.to_string(),
            state: rec.state,
            ip: rec.ip,
            image: image_name.to_string(),
            cpus: rec.cpus,
            memory_mib: rec.memory_mib,
            disk_mib: rec.disk_mib,
            created_at: rec.created_at,
            started_at: None,
            error: rec.error.clone(),
            pid: None,
            timings: Vec::new(),
            ports: Vec::new(),
            workspace: None,
            vmm: rec.vmm,
            backend: None,
            init: rec.init,
            ssh_port: None,
        }
    }
}

/// Everything the CLI needs to open an ssh session to a VM itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshInfo {
    /// VM name.
    pub name: String,
    /// Guest address (loopback in rootless mode, with `port`).
    pub ip: Ipv4Addr,
    /// The port to connect to when not 22 (rootless mode: a loopback port forwarded
    /// to the guest's sshd).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user inside the guest.
    pub user: String,
    /// banger's private key.
    pub key_path: PathBuf,
    /// known_hosts file pinning this VM's host key.
    pub known_hosts_path: PathBuf,
    /// The name the pin is under (`dev.vm`): ssh's `HostKeyAlias`.
    #[serde(default)]
    pub host_key_alias: Option<String>,
    /// OpenSSH ControlPath for connection reuse: one master per VM, in the VM's
    /// runtime directory, so it disappears with the VM (a later VM that gets the same
    /// address can never be reached through a stale master).
    #[serde(default)]
    pub control_path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_params_accept_empty_object_and_validate_name() {
        let p: VmCreateParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p, VmCreateParams::default());
        let p: VmCreateParams =
            serde_json::from_str(r#"{"name":"dev","cpus":4,"memory_mib":4096}"#).unwrap();
        assert_eq!(p.name.unwrap().as_str(), "dev");
        assert_eq!(p.cpus, Some(4));
        assert!(serde_json::from_str::<VmCreateParams>(r#"{"name":"Bad Name"}"#).is_err());
    }

    #[test]
    fn vm_info_from_record_copies_durable_fields() {
        let rec = VmRecord {
            id: "0123456789ab".into(),
            name: VmName::parse("dev").unwrap(),
            image_id: "img1".into(),
            state: banger_model::VmState::Running,
            ip: Ipv4Addr::new(172, 30, 0, 2),
            cpus: 2,
            memory_mib: 1024,
            disk_mib: 8192,
            created_at: 1_700_000_000,
            error: None,
            vmm: Default::default(),
            created_op: None,
            init: InitMode::Systemd,
        };
        let info = VmInfo::from_record(&rec, "debian-bookworm");
        assert_eq!(info.name, "dev");
        assert_eq!(info.state, banger_model::VmState::Running);
        assert_eq!(serde_json::to_value(&info).unwrap()["state"], "running");
        assert_eq!(info.image, "debian-bookworm");
        assert_eq!(info.pid, None);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["ip"], "172.30.0.2");
        assert_eq!(json["init"], "systemd");
        let back: VmInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
    }
}
