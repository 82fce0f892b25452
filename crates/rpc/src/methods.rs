//! Method names and their typed params and results.
//!
//! The daemon registers handlers under these names and the CLI calls them; both
//! sides share these structs so a field rename breaks the build, not a user.
//! `METHODS` is the pinned list: a daemon test compares it with the router.

use banger_model::{VmName, VmRecord, VmmChoice, WorkspaceRecord};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// `ping` -> [`PingResult`]: liveness and version check (no params).
pub const PING: &str = "ping";
/// `vm.create` [`VmCreateParams`] -> [`VmInfo`].
pub const VM_CREATE: &str = "vm.create";
/// `vm.list` (no params) -> `Vec<VmInfo>`.
pub const VM_LIST: &str = "vm.list";
/// `vm.show` [`VmNameParams`] -> [`VmInfo`].
pub const VM_SHOW: &str = "vm.show";
/// `vm.delete` [`VmDeleteParams`] -> `null`.
pub const VM_DELETE: &str = "vm.delete";
/// `vm.ssh_info` [`VmNameParams`] -> [`SshInfo`].
pub const VM_SSH_INFO: &str = "vm.ssh_info";
/// `vm.start` [`VmNameParams`] -> [`VmInfo`]: boot a stopped VM.
pub const VM_START: &str = "vm.start";
/// `vm.stop` [`VmNameParams`] -> [`VmInfo`]: graceful (sync, poweroff, then force).
pub const VM_STOP: &str = "vm.stop";
/// `vm.restart` [`VmNameParams`] -> [`VmInfo`]: stop then start.
pub const VM_RESTART: &str = "vm.restart";
/// `vm.kill` [`VmNameParams`] -> [`VmInfo`]: force off now, no guest cooperation.
pub const VM_KILL: &str = "vm.kill";
/// `vm.prune` (no params) -> [`PruneResult`]: delete every VM that is not running.
pub const VM_PRUNE: &str = "vm.prune";
/// `vm.set` [`VmSetParams`] -> [`VmInfo`]: resize a stopped VM.
pub const VM_SET: &str = "vm.set";
/// `vm.logs` [`VmLogsParams`] -> [`VmLogsResult`]: the guest console from an offset.
pub const VM_LOGS: &str = "vm.logs";
/// `vm.stats` [`VmNameParams`] -> [`VmStats`].
pub const VM_STATS: &str = "vm.stats";
/// `vm.ports` [`VmNameParams`] -> [`VmPorts`]: TCP ports listening in the guest.
pub const VM_PORTS: &str = "vm.ports";
/// `vm.workspace_record` [`WorkspaceParams`] -> [`VmInfo`]: remember what the CLI shipped.
pub const VM_WORKSPACE_RECORD: &str = "vm.workspace_record";
/// `operations.list` (no params) -> `Vec<OperationInfo>`: calls in flight.
pub const OPERATIONS_LIST: &str = "operations.list";
/// `image.build` [`ImageBuildParams`] -> [`ImageInfo`].
pub const IMAGE_BUILD: &str = "image.build";
/// `image.pull` [`ImagePullParams`] -> [`ImageInfo`]: an OCI image from a registry.
pub const IMAGE_PULL: &str = "image.pull";
/// `image.delete` [`ImageNameParams`] -> `null`: refused while a VM uses it.
pub const IMAGE_DELETE: &str = "image.delete";
/// `image.show` [`ImageNameParams`] -> [`ImageInfo`].
pub const IMAGE_SHOW: &str = "image.show";
/// `image.list` (no params) -> `Vec<ImageInfo>`.
pub const IMAGE_LIST: &str = "image.list";
/// `image.register` [`ImageRegisterParams`] -> [`ImageInfo`]: a local rootfs (+ kernel).
pub const IMAGE_REGISTER: &str = "image.register";
/// `image.promote` [`ImagePromoteParams`] -> [`ImageInfo`]: a stopped VM becomes an image.
pub const IMAGE_PROMOTE: &str = "image.promote";
/// `image.cache_prune` [`CachePruneParams`] -> [`CachePruneResult`].
pub const IMAGE_CACHE_PRUNE: &str = "image.cache_prune";
/// `catalog.list` (no params) -> [`CatalogListing`]: what `pull NAME` can fetch.
pub const CATALOG_LIST: &str = "catalog.list";
/// `kernel.import` [`KernelImportParams`] -> [`KernelInfo`].
pub const KERNEL_IMPORT: &str = "kernel.import";
/// `kernel.pull` [`KernelNameParams`] -> [`KernelInfo`]: from the catalog.
pub const KERNEL_PULL: &str = "kernel.pull";
/// `kernel.list` (no params) -> `Vec<KernelInfo>`.
pub const KERNEL_LIST: &str = "kernel.list";
/// `kernel.show` [`KernelNameParams`] -> [`KernelInfo`].
pub const KERNEL_SHOW: &str = "kernel.show";
/// `kernel.delete` [`KernelNameParams`] -> `null`: images keep their own copy.
pub const KERNEL_DELETE: &str = "kernel.delete";

/// Every method name, sorted (the order `Router::methods` returns).
pub const METHODS: &[&str] = &[
    CATALOG_LIST,
    IMAGE_BUILD,
    IMAGE_CACHE_PRUNE,
    IMAGE_DELETE,
    IMAGE_LIST,
    IMAGE_PROMOTE,
    IMAGE_PULL,
    IMAGE_REGISTER,
    IMAGE_SHOW,
    KERNEL_DELETE,
    KERNEL_IMPORT,
    KERNEL_LIST,
    KERNEL_PULL,
    KERNEL_SHOW,
    OPERATIONS_LIST,
    PING,
    VM_CREATE,
    VM_DELETE,
    VM_KILL,
    VM_LIST,
    VM_LOGS,
    VM_PORTS,
    VM_PRUNE,
    VM_RESTART,
    VM_SET,
    VM_SHOW,
    VM_SSH_INFO,
    VM_START,
    VM_STATS,
    VM_STOP,
    VM_WORKSPACE_RECORD,
];

/// Params of methods that take none. Accepts `null`, a missing `params` or `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoParams {}

/// Reply to `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    /// The daemon's version (crate version), so the CLI can warn on mismatch.
    pub version: String,
    /// The daemon's pid, for `banger daemon status` and debugging.
    pub pid: u32,
}

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
}

/// Result of `vm.ports`: TCP ports listening in the guest (from the guest agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPorts {
    /// VM name.
    pub name: String,
    /// Guest address (reach a port at `ip:port` from the host).
    pub ip: Ipv4Addr,
    /// Listening TCP ports, sorted.
    pub ports: Vec<u16>,
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
    /// Byte offset to read from; `None` means "the last 64 KiB".
    #[serde(default)]
    pub offset: Option<u64>,
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
pub struct VmStats {
    /// VM name.
    pub name: String,
    /// Lifecycle state.
    pub state: String,
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

/// One call in flight on the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationInfo {
    /// The operation id (grep the daemon log for it).
    pub op_id: String,
    /// RPC method.
    pub method: String,
    /// What it acts on (VM or image name).
    pub target: String,
    /// The stage it has reached.
    pub stage: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
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
    /// Lifecycle state (`creating`, `running`, `stopped`, `error`).
    pub state: String,
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
    /// Why the VM is in `error`, if it is.
    #[serde(default)]
    pub error: Option<String>,
    /// VMM process id while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Stage durations of the call that produced this (empty otherwise).
    #[serde(default)]
    pub timings: Vec<StageTiming>,
    /// The host repository shipped into the VM, if any.
    #[serde(default)]
    pub workspace: Option<WorkspaceRecord>,
    /// The VMM backend asked for (`auto`, `qemu`, `firecracker`).
    #[serde(default)]
    pub vmm: VmmChoice,
    /// The backend actually running it, while it runs.
    #[serde(default)]
    pub backend: Option<String>,
}

impl VmInfo {
    /// Build from a store record; live facts (`pid`, `timings`) start empty for
    /// the daemon to fill in.
    pub fn from_record(rec: &VmRecord, image_name: &str) -> Self {
        Self {
            id: rec.id.clone(),
            name: rec.name.to_string(),
            state: rec.state.as_str().to_string(),
            ip: rec.ip,
            image: image_name.to_string(),
            cpus: rec.cpus,
            memory_mib: rec.memory_mib,
            disk_mib: rec.disk_mib,
            created_at: rec.created_at,
            error: rec.error.clone(),
            pid: None,
            timings: Vec::new(),
            workspace: None,
            vmm: rec.vmm,
            backend: None,
        }
    }
}

/// Everything the CLI needs to open an ssh session to a VM itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshInfo {
    /// VM name.
    pub name: String,
    /// Guest address.
    pub ip: Ipv4Addr,
    /// Login user inside the guest.
    pub user: String,
    /// banger's private key.
    pub key_path: PathBuf,
    /// known_hosts file pinning this VM's host key.
    pub known_hosts_path: PathBuf,
    /// OpenSSH ControlPath for connection reuse: one master per VM, in the VM's
    /// runtime directory, so it disappears with the VM (a later VM that gets the same
    /// address can never be reached through a stale master).
    #[serde(default)]
    pub control_path: Option<PathBuf>,
}

/// Params of `image.build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuildParams {
    /// Image name; derived from the release when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Distribution release (e.g. `bookworm`); the default when absent.
    #[serde(default)]
    pub release: Option<String>,
    /// Extra Debian packages to install beyond banger's base set.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Params of `image.pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePullParams {
    /// A catalog name (`debian-bookworm`) or an OCI reference, e.g.
    /// `docker.io/library/debian:bookworm` or `localhost:5000/x:y`. A bare name
    /// without `/`, `:` or `@` is looked up in the catalog.
    pub reference: String,
    /// Image name; derived from the reference when absent (`debian-bookworm`).
    #[serde(default)]
    pub name: Option<String>,
    /// Kernel (from `kernel list`) an OCI image boots; the default image's kernel
    /// when absent. Catalog images name their own kernel.
    #[serde(default)]
    pub kernel: Option<String>,
}

/// Params of `image.register`. Paths are absolute, on the daemon's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRegisterParams {
    /// New image name.
    pub name: String,
    /// Root filesystem: an ext4 image file, or a tar archive (plain, gzip, zstd, xz).
    pub rootfs: PathBuf,
    /// Kernel from the kernel store; the default image's kernel when absent and no
    /// `kernel_file` is given.
    #[serde(default)]
    pub kernel: Option<String>,
    /// A kernel file to import for this image (as kernel `<name>`).
    #[serde(default)]
    pub kernel_file: Option<PathBuf>,
    /// Modules directory for `kernel_file` (banger builds its initrd from it).
    #[serde(default)]
    pub modules: Option<PathBuf>,
}

/// Params of `image.promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePromoteParams {
    /// The stopped VM.
    pub vm: String,
    /// New image name.
    pub name: String,
    /// Leave the VM's /root (its work disk) out of the new image's work seed.
    #[serde(default)]
    pub no_work: bool,
}

/// Params of `image.cache_prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruneParams {
    /// Only report what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// Reply of `image.cache_prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruneResult {
    /// Blobs removed (or that would be).
    pub blobs: u64,
    /// Bytes freed (or that would be).
    pub bytes: u64,
    /// Blobs kept because an image was made from them.
    pub kept: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// Name to pull.
    pub name: String,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// Image entries: the kernel they boot; kernel entries: the release.
    #[serde(default)]
    pub detail: String,
    /// Download size in bytes.
    pub size_bytes: u64,
}

/// Reply of `catalog.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogListing {
    /// Where the catalog was read from; `None` when none is configured.
    pub location: Option<String>,
    /// Pullable images.
    pub images: Vec<CatalogItem>,
    /// Pullable kernels.
    pub kernels: Vec<CatalogItem>,
}

/// Params of `kernel.import`. Paths are absolute, on the daemon's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelImportParams {
    /// Kernel image: a bzImage (`/boot/vmlinuz-*`) or an ELF vmlinux.
    pub path: PathBuf,
    /// Kernel name; the kernel's release when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Release override, when the kernel file does not say.
    #[serde(default)]
    pub release: Option<String>,
    /// Modules: a directory holding `lib/modules/<release>` (or that directory itself).
    /// Without it the kernel must have virtio, ext4 and overlay built in.
    #[serde(default)]
    pub modules: Option<PathBuf>,
    /// A ready initrd that runs banger's init (advanced; replaces building one).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
}

/// Params of methods addressing one kernel by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelNameParams {
    /// The kernel's name.
    pub name: String,
}

/// A stored kernel as shown to users.
pub use banger_model::KernelRecord as KernelInfo;

/// Params of methods addressing one image by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageNameParams {
    /// The image's name.
    pub name: String,
}

/// A published image as shown to users: the stored record is exactly what users see,
/// so the wire type is the record itself.
pub use banger_model::ImageRecord as ImageInfo;

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
                "image.build",
                "image.cache_prune",
                "image.delete",
                "image.list",
                "image.promote",
                "image.pull",
                "image.register",
                "image.show",
                "kernel.delete",
                "kernel.import",
                "kernel.list",
                "kernel.pull",
                "kernel.show",
                "operations.list",
                "ping",
                "vm.create",
                "vm.delete",
                "vm.kill",
                "vm.list",
                "vm.logs",
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
        };
        let info = VmInfo::from_record(&rec, "debian-bookworm");
        assert_eq!(info.name, "dev");
        assert_eq!(info.state, "running");
        assert_eq!(info.image, "debian-bookworm");
        assert_eq!(info.pid, None);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["ip"], "172.30.0.2");
        let back: VmInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
    }
}
