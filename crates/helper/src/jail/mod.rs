//! Firecracker guests launched through Firecracker's jailer, by the root helper.
//!
//! The owner daemon cannot chroot, mknod or change uid, so the helper starts each
//! Firecracker guest: it checks the request (the guest's files must be the owner's,
//! below the owner's state directory; its tap must be one the helper made for the
//! owner), prepares `<jail root>/firecracker/banger-<vm id>/root` (a fresh chroot:
//! kernel, initrd and disks hard-linked from the checked descriptors, console and log
//! files owned by the owner) and runs the jailer from the helper's config by absolute
//! path, which copies Firecracker in, creates `/dev/kvm` and `/dev/net/tun`, joins a
//! cgroup under `banger/`, drops to the owner's uid/gid and execs Firecracker. The
//! jailer runs in its own session, so the helper can restart (or be killed) without
//! taking guests with it. The daemon then configures the guest over the API socket in
//! the chroot, which belongs to the owner, exactly as it does an unjailed one, with the
//! chroot-relative paths [`JailLaunched::spec`] carries.

pub mod args;
pub(crate) mod files;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_vmm::firecracker::jailer::{Jail, JailerError, Placement};
use banger_vmm::firecracker::{files as fc_files, output_tail, READY_TIMEOUT};
use banger_vmm::MachineSpec;
use serde::{Deserialize, Serialize};

use crate::config::HelperConfig;
use crate::tools::checked_tool;
use crate::HelperError;
use args::{cgroup_dirs, detect_cgroup_version, jailer_args};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Most vCPUs a jailed guest may have (Firecracker's own limit).
const MAX_CPUS: u32 = 32;
/// Guest memory bounds, MiB.
const MEMORY_MIB: std::ops::RangeInclusive<u64> = 128..=1024 * 1024;
/// Most disks a guest may have.
const MAX_DISKS: usize = 8;

/// Why a jailed launch or cleanup was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The jailer or Firecracker is not configured.
    #[error("jailed Firecracker guests need `jailer` and `firecracker` (absolute paths) in /etc/banger/helper.toml; add them and restart the helper, or use the QEMU backend")]
    NotConfigured,
    /// The machine description is outside what the helper launches.
    #[error("jailed launch refused: {0}")]
    BadSpec(String),
    /// A file the guest would use is not the owner's, not below the owner's state
    /// directory, or reached through a symlink.
    #[error("jailed launch refused: {path}: {reason}")]
    BadFile {
        /// The path in the request.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The jail's layout could not be planned or its directories are unsafe.
    #[error(transparent)]
    Layout(#[from] JailerError),
    /// The jail root is not a root-owned directory only root can write.
    #[error("the jail root {path} is unsafe: {reason}; it must be a root-owned directory not writable by group or others (the helper creates it 0711)")]
    UnsafeRoot {
        /// The jail root or a directory below it.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A guest of that id still runs in the jail.
    #[error("a Firecracker guest for {0} is still running in its jail; stop the VM first")]
    Running(String),
    /// The jailer exited before Firecracker opened its API socket.
    #[error("the jailer exited ({status}) before Firecracker started; its output:\n{output}")]
    Exited {
        /// Exit status.
        status: String,
        /// Tail of the console log.
        output: String,
    },
    /// Firecracker did not open its API socket in time.
    #[error("jailed Firecracker did not open {socket} within {waited:?}; its output:\n{output}")]
    NotReady {
        /// The API socket (host path).
        socket: PathBuf,
        /// How long the helper waited.
        waited: Duration,
        /// Tail of the console log.
        output: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the helper was doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where a jailed guest runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailLaunched {
    /// Firecracker's pid (the jailer execs it in place).
    pub pid: u32,
    /// The jailer id (`banger-<vm id>`): Firecracker's command line carries
    /// `--id <jail_id>`, which is how to recognise the process after pid reuse.
    pub jail_id: String,
    /// The chroot on the host.
    pub chroot: PathBuf,
    /// Firecracker's API socket, host path (owned by the owner).
    pub api_socket: PathBuf,
    /// The guest's vsock socket, host path.
    pub vsock_socket: PathBuf,
    /// The guest console (Firecracker's stdout and stderr), host path.
    pub console_log: PathBuf,
    /// The machine as Firecracker sees it inside the chroot: build the API requests
    /// (`Firecracker::configure_requests`) from this.
    pub spec: MachineSpec,
}

/// The jailer id of a VM.
pub fn jail_id(vm_id: &str) -> String {
    format!("banger-{vm_id}")
}

fn jailer_io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Io { what, path, source }
}

/// Check the parts of `spec` the helper acts on.
fn check_spec(spec: &MachineSpec) -> Result<(), JailError> {
    let bad = |m: String| Err(JailError::BadSpec(m));
    if !(1..=MAX_CPUS).contains(&spec.cpus) {
        return bad(format!("{} vCPUs (1 to {MAX_CPUS})", spec.cpus));
    }
    if !MEMORY_MIB.contains(&spec.memory_mib) {
        return bad(format!(
            "{} MiB of memory (128 MiB to 1 TiB)",
            spec.memory_mib
        ));
    }
    if spec.disks.is_empty() || spec.disks.len() > MAX_DISKS {
        return bad(format!("{} disks (1 to {MAX_DISKS})", spec.disks.len()));
    }
    if spec.id.is_empty()
        || spec.id.len() > 32
        || !spec
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return bad(format!(
            "VM id {:?}: 1 to 32 letters, digits and hyphens",
            spec.id
        ));
    }
    if let Some(n) = &spec.net {
        let octets: Vec<&str> = n.mac.split(':').collect();
        let mac_ok = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if !mac_ok {
            return bad(format!("MAC address {:?}", n.mac));
        }
        // A jailed Firecracker gets a tap; the user-space stacks are rootless mode's.
        if n.backend != banger_vmm::NetBackend::Tap {
            return bad("a network backend other than a tap".to_string());
        }
    }
    Ok(())
}

/// Make `dir` a root-owned 0711 directory (creating it if needed), refusing a symlink
/// or a directory someone else could write.
fn ensure_root_dir(dir: &Path) -> Result<(), JailError> {
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(jailer_io("create", dir)(e))
        }
        // The helper's umask (077) narrowed the mode: the owner must traverse it.
        Ok(()) => set_mode(dir, 0o711)?,
        _ => {}
    }
    let md = std::fs::symlink_metadata(dir).map_err(jailer_io("inspect", dir))?;
    let unsafe_root = |reason: String| JailError::UnsafeRoot {
        path: dir.to_path_buf(),
        reason,
    };
    if !md.is_dir() {
        return Err(unsafe_root("it is not a directory (a symlink?)".into()));
    }
    if md.uid() != 0 {
        return Err(unsafe_root(format!("it is owned by uid {}", md.uid())));
    }
    if md.mode() & 0o022 != 0 {
        return Err(unsafe_root(format!("its mode is {:o}", md.mode() & 0o7777)));
    }
    // The owner (Firecracker, and the daemon reaching its sockets) must traverse it.
    if md.mode() & 0o011 != 0o011 {
        set_mode(dir, (md.mode() & 0o7777) | 0o011)?;
    }
    Ok(())
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), JailError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(jailer_io("set the mode of", dir))
}

/// Whether a process with `--id <jail_id>` on its command line runs (the jailer
/// passes the id to Firecracker that way).
pub fn running(jail_id: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let is_pid = e
            .file_name()
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read(e.path().join("cmdline")).is_ok_and(|raw| {
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--id" && w[1] == jail_id.as_bytes())
            })
    })
}

/// Launch `spec` through the jailer as the configured owner. The caller has checked
/// the tap (one the helper made for the owner).
pub(crate) async fn launch(
    cfg: &HelperConfig,
    spec: &MachineSpec,
) -> Result<JailLaunched, HelperError> {
    let (Some(jailer), Some(fc)) = (&cfg.jailer, &cfg.firecracker) else {
        return Err(JailError::NotConfigured.into());
    };
    let jailer = checked_tool("jailer", jailer)?;
    let fc = checked_tool("firecracker", fc)?;
    check_spec(spec)?;
    let owner = (cfg.owner_uid, cfg.owner_gid);
    let base = &cfg.owner_state_dir;
    let kernel = files::open_owned_file(base, &spec.kernel, owner.0)?;
    let initrd = match &spec.initrd {
        Some(p) => Some(files::open_owned_file(base, p, owner.0)?),
        None => None,
    };
    let disks = spec
        .disks
        .iter()
        .map(|d| files::open_owned_file(base, &d.path, owner.0))
        .collect::<Result<Vec<_>, _>>()?;

    let id = jail_id(&spec.id);
    let jail = Jail::plan(&cfg.jail_root, &id, spec, &fc).map_err(JailError::from)?;
    ensure_root_dir(&cfg.jail_root)?;
    if let Some(exec_dir) = jail.dir.parent() {
        ensure_root_dir(exec_dir)?;
    }
    if std::fs::symlink_metadata(&jail.dir).is_ok() {
        if running(&id) {
            return Err(JailError::Running(spec.id.clone()).into());
        }
        jail.cleanup().map_err(JailError::from)?;
    }
    let prepared = prepare(&jail, owner, &kernel, initrd.as_ref(), &disks);
    let console = match prepared {
        Ok(c) => c,
        Err(e) => {
            let _ = jail.cleanup();
            return Err(e.into());
        }
    };
    let version = detect_cgroup_version(Path::new(CGROUP_ROOT));
    let args = jailer_args(&jail, &fc, owner, version, spec.memory_mib);
    match start(&jail, &jailer, &args, console).await {
        Ok(pid) => {
            tracing::info!(jail = %id, pid, "jailed firecracker started");
            Ok(JailLaunched {
                pid,
                jail_id: id,
                chroot: jail.root.clone(),
                api_socket: jail.api_socket(),
                vsock_socket: jail.vsock_socket(),
                console_log: jail.root.join(fc_files::CONSOLE),
                spec: jail.spec.clone(),
            })
        }
        Err(e) => {
            let _ = jail.cleanup();
            remove_cgroups(&id);
            Err(e.into())
        }
    }
}

/// Create the chroot and place the guest's files; returns the console log, opened
/// for the jailer's stdout and stderr.
fn prepare(
    jail: &Jail,
    owner: (u32, u32),
    kernel: &std::os::fd::OwnedFd,
    initrd: Option<&std::os::fd::OwnedFd>,
    disks: &[std::os::fd::OwnedFd],
) -> Result<std::fs::File, JailError> {
    std::fs::DirBuilder::new()
        .mode(0o711)
        .create(&jail.dir)
        .map_err(jailer_io("create", &jail.dir))?;
    set_mode(&jail.dir, 0o711)?;
    // The jailer makes the chroot the owner's (0700) once it is inside.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&jail.root)
        .map_err(jailer_io("create", &jail.root))?;
    let mut sources = vec![kernel];
    sources.extend(initrd);
    sources.extend(disks);
    // The firecracker binary is the jailer's to copy in (it is not in `sources`).
    let staged = jail.files.iter().filter(|f| f.placement != Placement::Copy);
    for (f, fd) in staged.zip(sources) {
        let dest = jail.host_path(&f.inside);
        if !files::link_fd(fd, &dest)? {
            match f.placement {
                Placement::LinkOnly => {
                    return Err(JailerError::CrossDevice {
                        source_path: f.source.clone(),
                        jail: dest,
                    }
                    .into())
                }
                _ => files::copy_fd(fd, &dest, owner)?,
            }
        }
    }
    // Firecracker opens its log without creating it.
    files::create_owned(&jail.root.join(fc_files::LOG), owner)?;
    files::create_owned(&jail.root.join(fc_files::CONSOLE), owner)
}

/// Run the jailer in its own session with the console as stdout/stderr and wait for
/// Firecracker's API socket.
async fn start(
    jail: &Jail,
    jailer: &Path,
    args: &[String],
    console: std::fs::File,
) -> Result<u32, JailError> {
    let console_err = console
        .try_clone()
        .map_err(jailer_io("duplicate", &jail.root))?;
    let mut cmd = tokio::process::Command::new(jailer);
    cmd.args(args)
        .env_clear()
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(console)
        .stderr(console_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(jailer_io("run", jailer))?;
    let pid = child.id().unwrap_or(0);
    let api = jail.api_socket();
    let console_path = jail.root.join(fc_files::CONSOLE);
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(JailError::Exited {
                status: status.to_string(),
                output: output_tail(&console_path, 20),
            });
        }
        if std::fs::symlink_metadata(&api).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            // Dropping the Child neither kills nor leaks it: tokio reaps it.
            drop(child);
            return Ok(pid);
        }
        if t.elapsed() > READY_TIMEOUT {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(JailError::NotReady {
                socket: api,
                waited: READY_TIMEOUT,
                output: output_tail(&console_path, 20),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remove_cgroups(jail_id: &str) {
    let root = Path::new(CGROUP_ROOT);
    for d in cgroup_dirs(root, detect_cgroup_version(root), jail_id) {
        match std::fs::remove_dir(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(cgroup = %d.display(), error = %e, "could not remove a jailed guest's cgroup");
            }
            _ => {}
        }
    }
}

/// Remove a stopped guest's jail (chroot, hard links, device nodes) and cgroups.
/// Refused while its Firecracker runs. Absent is fine.
pub(crate) fn cleanup(cfg: &HelperConfig, vm_id: &str) -> Result<(), HelperError> {
    let Some(fc) = &cfg.firecracker else {
        return Err(JailError::NotConfigured.into());
    };
    if vm_id.is_empty()
        || vm_id.len() > 32
        || !vm_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(JailError::BadSpec(format!("VM id {vm_id:?}")).into());
    }
    let id = jail_id(vm_id);
    if running(&id) {
        return Err(JailError::Running(vm_id.to_string()).into());
    }
    let exec_name = fc.file_name().map(PathBuf::from).unwrap_or_default();
    let dir = cfg.jail_root.join(exec_name).join(&id);
    let jail = Jail {
        base: cfg.jail_root.clone(),
        id: id.clone(),
        root: dir.join("root"),
        dir,
        files: vec![],
        devices: vec![],
        spec: MachineSpec {
            id: vm_id.to_string(),
            cpus: 1,
            memory_mib: 128,
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            net: None,
            runtime_dir: PathBuf::from("/"),
            restore: None,
        },
    };
    jail.cleanup().map_err(JailError::from)?;
    remove_cgroups(&id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_checks() {
        let mut s = MachineSpec {
            id: "0a1b2c".into(),
            cpus: 2,
            memory_mib: 1024,
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![banger_vmm::DiskSpec {
                path: "/d".into(),
                read_only: false,
            }],
            net: Some(banger_vmm::NetSpec {
                tap: "bgr1".into(),
                mac: "06:ba:ac:1e:00:02".into(),
                unplugged: false,
                backend: banger_vmm::NetBackend::Tap,
            }),
            runtime_dir: "/".into(),
            restore: None,
        };
        check_spec(&s).unwrap();
        s.cpus = 0;
        assert!(check_spec(&s).is_err());
        s.cpus = 33;
        assert!(check_spec(&s).is_err());
        s.cpus = 1;
        s.memory_mib = 64;
        assert!(check_spec(&s).is_err());
        s.memory_mib = 512;
        s.id = "../etc".into();
        assert!(check_spec(&s).is_err());
        s.id = "ok".into();
        s.net.as_mut().unwrap().mac = "06:ba:ac:1e:00".into();
        assert!(check_spec(&s).is_err());
        s.net = None;
        s.disks.clear();
        assert!(check_spec(&s).is_err());
    }

    #[test]
    fn running_finds_an_id_argument() {
        let mut c = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "sh", "--id", "banger-test-running"])
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !running("banger-test-running") && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(running("banger-test-running"));
        assert!(!running("banger-test-other"));
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
