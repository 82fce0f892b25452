//! Staging a VM's chroot for Firecracker's jailer (system mode).
//!
//! In system mode the daemon runs as root and starts each guest through `jailer`,
//! which chroots into `<base>/<exec name>/<id>/root`, drops to the VM owner's uid/gid
//! and execs firecracker there. Everything firecracker opens must therefore exist
//! *inside* that root: the kernel and initrd (hard-linked, copied when the base is on
//! another filesystem), the disks (hard-linked only: a copy would fork the VM's data),
//! and the device nodes `/dev/kvm` and `/dev/net/tun`. Firecracker creates its API and
//! vsock sockets inside the root itself; the host reaches them under
//! [`Jail::root`], and through a short symlink when that path is longer than a unix
//! socket address allows (`sun_path` is 108 bytes; connect(2) follows symlinks).
//!
//! [`Jail::plan`] is pure: it computes the layout and the [`MachineSpec`] as firecracker
//! sees it inside the chroot, which is what the API requests must carry.
//! [`Jail::cleanup`] refuses to delete through a symlinked path component, because the
//! jail belongs to the VM owner while the daemon deleting it runs as root.

use crate::firecracker::{files, MAX_SOCKET_PATH};
use crate::MachineSpec;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// A character device firecracker needs inside the chroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the chroot.
    pub path: &'static str,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Permission bits (the node is owned by the VM owner).
    pub mode: u32,
}

/// `/dev/kvm` (misc device 10:232): every guest.
pub const KVM: DeviceNode = DeviceNode {
    path: "/dev/kvm",
    major: 10,
    minor: 232,
    mode: 0o660,
};
/// `/dev/net/tun` (misc device 10:200): guests with a network interface, to attach the
/// tap the daemon created.
pub const TUN: DeviceNode = DeviceNode {
    path: "/dev/net/tun",
    major: 10,
    minor: 200,
    mode: 0o660,
};

/// How a host file is placed into the chroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Hard link, or a copy when source and jail are on different filesystems
    /// (kernel, initrd: read-only and small).
    LinkOrCopy,
    /// Hard link or fail: the guest must write to the VM's own disk file.
    LinkOnly,
    /// Always a copy (the firecracker binary, as the jailer itself does, so the chroot
    /// shares no executable inode with the host).
    Copy,
}

/// One host file placed into the chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// File on the host.
    pub source: PathBuf,
    /// Absolute path inside the chroot.
    pub inside: PathBuf,
    /// How it gets there.
    pub placement: Placement,
}

/// Why a jail could not be staged or removed.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    /// The VM id is not usable as a jailer `--id`.
    #[error("{0:?} is not a valid jailer id: use 1 to 64 letters, digits and hyphens")]
    InvalidId(String),
    /// A path that must be absolute (and plain) is not.
    #[error("{0} must be an absolute path without `..`")]
    NotAbsolute(PathBuf),
    /// A component of the jail's path is a symlink.
    #[error("refusing to use {0}: it is a symlink inside the jail base (someone replaced part of the jail); inspect it and remove it by hand")]
    Symlinked(PathBuf),
    /// A disk cannot be hard-linked into the jail.
    #[error("cannot hard-link {source_path} into {jail}: they are on different filesystems; put the jail base directory on the same filesystem as banger's state directory")]
    CrossDevice {
        /// The disk on the host.
        source_path: PathBuf,
        /// Where it should appear.
        jail: PathBuf,
    },
    /// Creating device nodes needs root.
    #[error("creating {0} needs root (CAP_MKNOD): run the daemon in system mode as root, or let the jailer create the device nodes")]
    NotRoot(&'static str),
    /// The short socket link itself is too long.
    #[error("socket link {path} is {len} bytes, more than the {MAX_SOCKET_PATH} a unix socket address holds: choose a shorter link directory")]
    LinkTooLong {
        /// The link path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Something other than a character device is where a device node should go.
    #[error("{0} exists and is not a character device: refusing to replace it")]
    NotADevice(PathBuf),
    /// Something other than our symlink is where the socket link should go.
    #[error("{0} exists and is not a symlink: refusing to replace it")]
    NotALink(PathBuf),
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailerError {
    let path = path.to_path_buf();
    move |source| JailerError::Io { what, path, source }
}

/// A VM's jail: where it lives and what goes in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// The jailer's `--chroot-base-dir`.
    pub base: PathBuf,
    /// The jailer's `--id`.
    pub id: String,
    /// `<base>/<exec name>/<id>`: what [`Jail::cleanup`] removes.
    pub dir: PathBuf,
    /// `<dir>/root`: the chroot.
    pub root: PathBuf,
    /// Files to place, the firecracker binary first.
    pub files: Vec<Staged>,
    /// Device nodes firecracker needs.
    pub devices: Vec<DeviceNode>,
    /// The machine as firecracker sees it inside the chroot (paths rewritten); build
    /// the API requests from this.
    pub spec: MachineSpec,
}

/// Path of the kernel inside the chroot.
pub const INSIDE_KERNEL: &str = "/vmlinux";
/// Path of the initrd inside the chroot.
pub const INSIDE_INITRD: &str = "/initrd.img";

fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

impl Jail {
    /// Compute the jail of `spec` under `base` for the firecracker binary `firecracker`
    /// (pure: touches nothing).
    pub fn plan(
        base: &Path,
        id: &str,
        spec: &MachineSpec,
        firecracker: &Path,
    ) -> Result<Jail, JailerError> {
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(JailerError::InvalidId(id.to_string()));
        }
        if !plain_absolute(base) {
            return Err(JailerError::NotAbsolute(base.to_path_buf()));
        }
        let exec_name = firecracker
            .file_name()
            .filter(|_| plain_absolute(firecracker))
            .ok_or_else(|| JailerError::NotAbsolute(firecracker.to_path_buf()))?;
        let dir = base.join(exec_name).join(id);
        let root = dir.join("root");
        let mut files = vec![Staged {
            source: firecracker.to_path_buf(),
            inside: Path::new("/").join(exec_name),
            placement: Placement::Copy,
        }];
        let mut inside = spec.clone();
        inside.runtime_dir = PathBuf::from("/");
        files.push(Staged {
            source: spec.kernel.clone(),
            inside: INSIDE_KERNEL.into(),
            placement: Placement::LinkOrCopy,
        });
        inside.kernel = INSIDE_KERNEL.into();
        if let Some(initrd) = &spec.initrd {
            files.push(Staged {
                source: initrd.clone(),
                inside: INSIDE_INITRD.into(),
                placement: Placement::LinkOrCopy,
            });
            inside.initrd = Some(INSIDE_INITRD.into());
        }
        for (i, d) in spec.disks.iter().enumerate() {
            let p = PathBuf::from(format!("/disk{i}.img"));
            files.push(Staged {
                source: d.path.clone(),
                inside: p.clone(),
                placement: Placement::LinkOnly,
            });
            inside.disks[i].path = p;
        }
        let mut devices = vec![KVM];
        if spec.net.is_some() {
            devices.push(TUN);
        }
        Ok(Jail {
            base: base.to_path_buf(),
            id: id.to_string(),
            dir,
            root,
            files,
            devices,
            spec: inside,
        })
    }

    /// Host path of `inside` (an absolute path in the chroot).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// Host path of firecracker's API socket (may exceed the socket address limit:
    /// see [`short_socket_link`]).
    pub fn api_socket(&self) -> PathBuf {
        self.root.join(files::API)
    }

    /// Host path of the vsock socket (the guest agent channel).
    pub fn vsock_socket(&self) -> PathBuf {
        self.root.join(files::VSOCK)
    }

    /// Arguments for `jailer` to start firecracker in this jail as `uid:gid`.
    pub fn jailer_args(&self, uid: u32, gid: u32) -> Vec<String> {
        let exec = self
            .files
            .first()
            .map(|f| f.source.display().to_string())
            .unwrap_or_default();
        vec![
            "--id".into(),
            self.id.clone(),
            "--exec-file".into(),
            exec,
            "--uid".into(),
            uid.to_string(),
            "--gid".into(),
            gid.to_string(),
            "--chroot-base-dir".into(),
            self.base.display().to_string(),
            "--".into(),
            "--api-sock".into(),
            Path::new("/").join(files::API).display().to_string(),
        ]
    }

    /// Create the chroot and place every file. Idempotent: re-staging replaces what
    /// is there. With `owner`, the chroot directory is handed to that uid:gid so the
    /// dropped firecracker can create its sockets (placed files keep their owners:
    /// a hard link shares its inode with the VM's own file).
    pub fn stage(&self, owner: Option<(u32, u32)>) -> Result<(), JailerError> {
        self.make_dirs()?;
        for f in &self.files {
            let dest = self.host_path(&f.inside);
            self.ensure_parent(&dest)?;
            match std::fs::remove_file(&dest) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove stale", &dest)(e))
                }
                _ => {}
            }
            match f.placement {
                Placement::Copy => copy(&f.source, &dest)?,
                Placement::LinkOrCopy => match std::fs::hard_link(&f.source, &dest) {
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy(&f.source, &dest)?,
                    r => r.map_err(io("hard-link into the jail", &f.source))?,
                },
                Placement::LinkOnly => match std::fs::hard_link(&f.source, &dest) {
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                        return Err(JailerError::CrossDevice {
                            source_path: f.source.clone(),
                            jail: dest,
                        })
                    }
                    r => r.map_err(io("hard-link into the jail", &f.source))?,
                },
            }
        }
        if let Some((uid, gid)) = owner {
            chown(&self.root, uid, gid)?;
        }
        Ok(())
    }

    /// Create the device nodes in the chroot, owned by `owner` (root only).
    pub fn make_device_nodes(&self, owner: Option<(u32, u32)>) -> Result<(), JailerError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(JailerError::NotRoot(
                self.devices
                    .first()
                    .map(|d| d.path)
                    .unwrap_or("device nodes"),
            ));
        }
        for d in &self.devices {
            let path = self.host_path(Path::new(d.path));
            self.ensure_parent(&path)?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_char_device() => {}
                Ok(_) => return Err(JailerError::NotADevice(path)),
                Err(_) => {
                    let c = CString::new(path.as_os_str().as_bytes())
                        .map_err(|e| io("encode", &path)(std::io::Error::other(e)))?;
                    let dev = libc::makedev(d.major, d.minor);
                    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
                    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | d.mode, dev) };
                    if rc != 0 {
                        return Err(io("mknod", &path)(std::io::Error::last_os_error()));
                    }
                    // mknod's mode is filtered by the umask; set it exactly.
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(d.mode),
                    )
                    .map_err(io("chmod", &path))?;
                }
            }
            if let Some((uid, gid)) = owner {
                chown(&path, uid, gid)?;
            }
        }
        Ok(())
    }

    /// Remove the jail (`<base>/<exec>/<id>`), refusing if any component from the base
    /// down is a symlink. The contents are removed without following symlinks
    /// (std's `remove_dir_all` unlinks a symlink rather than descending into it).
    pub fn cleanup(&self) -> Result<(), JailerError> {
        match std::fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        self.check_components(&self.dir)?;
        std::fs::remove_dir_all(&self.dir).map_err(io("remove jail", &self.dir))
    }

    /// Every existing component from `/` to `path` must be a real directory, except
    /// components above the base that the host set up as symlinks itself (such as
    /// Debian's `/var/run -> /run`): those are resolved once, and below the
    /// resolved base nothing may be a symlink.
    fn check_components(&self, path: &Path) -> Result<(), JailerError> {
        let real_base = std::fs::canonicalize(&self.base).map_err(io("resolve", &self.base))?;
        let rel = path
            .strip_prefix(&self.base)
            .map_err(|_| JailerError::NotAbsolute(path.to_path_buf()))?;
        let mut cur = real_base;
        for c in rel.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return Err(JailerError::Symlinked(cur)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("inspect", &cur)(e)),
            }
        }
        Ok(())
    }

    /// Create `<base>/<exec>/<id>/root` one level at a time, refusing symlinks.
    fn make_dirs(&self) -> Result<(), JailerError> {
        std::fs::create_dir_all(&self.base).map_err(io("create", &self.base))?;
        let rel = self
            .root
            .strip_prefix(&self.base)
            .map_err(|_| JailerError::NotAbsolute(self.root.clone()))?;
        let mut cur = self.base.clone();
        for c in rel.components() {
            cur.push(c);
            self.make_dir(&cur)?;
        }
        Ok(())
    }

    fn make_dir(&self, dir: &Path) -> Result<(), JailerError> {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io("create", dir)(e))
            }
            _ => {}
        }
        let m = std::fs::symlink_metadata(dir).map_err(io("inspect", dir))?;
        if !m.is_dir() {
            return Err(JailerError::Symlinked(dir.to_path_buf()));
        }
        Ok(())
    }

    /// Create the directories between the chroot and `path`'s parent (e.g. `/dev/net`).
    fn ensure_parent(&self, path: &Path) -> Result<(), JailerError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut cur = self.root.clone();
        for c in rel.components() {
            cur.push(c);
            self.make_dir(&cur)?;
        }
        Ok(())
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), JailerError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(io("copy into the jail", from))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), JailerError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io("chown", path))
}

/// Point `link` (short, ≤ 107 bytes) at `target` (a socket whose own path may be
/// too long to connect to), replacing an older link atomically.
pub fn short_socket_link(link: &Path, target: &Path) -> Result<(), JailerError> {
    let len = link.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(JailerError::LinkTooLong {
            path: link.to_path_buf(),
            len,
        });
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(JailerError::NotALink(link.to_path_buf()))
        }
        _ => {}
    }
    let tmp = link.with_file_name(format!(
        ".{}.tmp-{}",
        link.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io("create symlink", &tmp))?;
    std::fs::rename(&tmp, link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("rename symlink to", link)(e)
    })
}
