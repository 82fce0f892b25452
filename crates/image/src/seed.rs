//! Making an image's `/root` safe to keep on the host as the work seed.
//!
//! The work seed (`state/images/<id>/work-seed/`) is a host directory holding whatever
//! the image put in `/root`. Images are hostile until checked: a layer, a catalog
//! tarball or a VM's root user (through `image promote`) can put a setuid-root binary,
//! a device node, a socket or a file capability there, and on the host those keep
//! their power for anyone who can reach them. Nothing in a guest's home needs them, so
//! [`sanitize_work_seed`] drops them all, in the host tree and in the ownership record
//! of an unprivileged apply ([`Fixups`]), and reports what it dropped so the daemon can
//! warn. It also makes the seed directory itself 0700.
//!
//! No symlink is followed: the walk opens every directory relative to its parent with
//! `O_NOFOLLOW`, and symlinks themselves are only inspected (their `security.*`
//! attributes, such as SELinux labels, are dropped like any other).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    chmodat, fchmod, llistxattr, lremovexattr, openat, statat, unlinkat, AtFlags, FileType, Mode,
    OFlags, CWD,
};
use rustix::io::Errno;

use crate::oci::Fixups;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;
/// The kernel's limit on a listxattr result.
const XATTR_LIST_MAX: usize = 65536;

/// What was dropped from one path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropKind {
    /// The set-user-id bit.
    Setuid,
    /// The set-group-id bit.
    Setgid,
    /// A character or block device node (removed).
    Device,
    /// A unix socket (removed).
    Socket,
    /// A named pipe (removed).
    Fifo,
    /// A `security.*` or `trusted.*` extended attribute (e.g. `security.capability`).
    Xattr(String),
}

/// One thing [`sanitize_work_seed`] dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dropped {
    /// Path in the guest (`/root/...`).
    pub path: String,
    /// What was dropped.
    pub what: DropKind,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            DropKind::Setuid => write!(f, "{}: setuid bit", self.path),
            DropKind::Setgid => write!(f, "{}: setgid bit", self.path),
            DropKind::Device => write!(f, "{}: device node", self.path),
            DropKind::Socket => write!(f, "{}: socket", self.path),
            DropKind::Fifo => write!(f, "{}: named pipe", self.path),
            DropKind::Xattr(n) => write!(f, "{}: extended attribute {n}", self.path),
        }
    }
}

/// Why the seed could not be sanitised.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The seed itself is a symlink or not a directory.
    #[error("the work seed {0} is not a plain directory; refusing to walk it")]
    NotADirectory(PathBuf),
    /// A file operation failed.
    #[error("sanitising the work seed: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where (on the host).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Whether an extended attribute may grant privilege on the host.
fn dangerous_xattr(name: &str) -> bool {
    name.starts_with("security.") || name.starts_with("trusted.")
}

struct Walk {
    base: PathBuf,
    dropped: Vec<Dropped>,
}

fn guest_path(rel: &str) -> String {
    if rel.is_empty() {
        "/root".into()
    } else {
        format!("/root/{rel}")
    }
}

impl Walk {
    fn io(&self, what: &'static str, rel: &str) -> impl FnOnce(Errno) -> SeedError {
        let path = self.base.join(rel);
        move |e| SeedError::Io {
            what,
            path,
            source: e.into(),
        }
    }

    fn drop(&mut self, rel: &str, what: DropKind) {
        self.dropped.push(Dropped {
            path: guest_path(rel),
            what,
        });
    }

    /// Drop dangerous xattrs of `name` in `dir` (through /proc/self/fd, never
    /// following `name` itself).
    fn xattrs(&mut self, dir: BorrowedFd<'_>, name: &CStr, rel: &str) -> Result<(), SeedError> {
        use std::os::fd::AsRawFd;
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.to_bytes());
        let path = CString::new(p).map_err(|_| SeedError::Io {
            what: "name",
            path: self.base.join(rel),
            source: std::io::Error::other("NUL in a file name"),
        })?;
        let mut buf = vec![0u8; XATTR_LIST_MAX];
        let n = match llistxattr(path.as_c_str(), &mut buf[..]) {
            Ok(n) => n,
            // No xattr support on this filesystem: nothing to drop.
            Err(Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(self.io("list extended attributes of", rel)(e)),
        };
        for raw in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let xname = String::from_utf8_lossy(raw).into_owned();
            if dangerous_xattr(&xname) {
                match lremovexattr(path.as_c_str(), raw) {
                    Ok(()) | Err(Errno::NODATA) => {}
                    Err(e) => return Err(self.io("remove an extended attribute of", rel)(e)),
                }
                self.drop(rel, DropKind::Xattr(xname));
            }
        }
        Ok(())
    }

    fn dir(&mut self, fd: BorrowedFd<'_>, rel: &str) -> Result<(), SeedError> {
        for name in crate::oci::list_names(fd).map_err(|e| SeedError::Io {
            what: "read directory",
            path: self.base.join(rel),
            source: e,
        })? {
            let child = {
                let n = OsStr::from_bytes(name.to_bytes()).to_string_lossy();
                if rel.is_empty() {
                    n.into_owned()
                } else {
                    format!("{rel}/{n}")
                }
            };
            self.entry(fd, &name, &child)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, rel: &str) -> Result<(), SeedError> {
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io("inspect", rel)(e)),
        };
        let mode = st.st_mode;
        match FileType::from_raw_mode(mode) {
            FileType::CharacterDevice | FileType::BlockDevice => {
                return self.remove(dir, name, rel, DropKind::Device)
            }
            FileType::Socket => return self.remove(dir, name, rel, DropKind::Socket),
            FileType::Fifo => return self.remove(dir, name, rel, DropKind::Fifo),
            _ => {}
        }
        self.xattrs(dir, name, rel)?;
        let kind = FileType::from_raw_mode(mode);
        if kind == FileType::Symlink {
            return Ok(());
        }
        let special = mode & (S_ISUID | S_ISGID);
        if special != 0 {
            // chmodat follows a symlink, but `name` is a regular file or directory
            // (checked above) in a tree only this process writes.
            chmodat(
                dir,
                name,
                Mode::from_raw_mode(mode & 0o1777),
                AtFlags::empty(),
            )
            .map_err(self.io("clear setuid/setgid bits of", rel))?;
            if special & S_ISUID != 0 {
                self.drop(rel, DropKind::Setuid);
            }
            if special & S_ISGID != 0 {
                self.drop(rel, DropKind::Setgid);
            }
        }
        if kind == FileType::Directory {
            let fd: OwnedFd = openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(self.io("open directory", rel))?;
            self.dir(fd.as_fd(), rel)?;
        }
        Ok(())
    }

    fn remove(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &str,
        what: DropKind,
    ) -> Result<(), SeedError> {
        unlinkat(dir, name, AtFlags::empty()).map_err(self.io("remove", rel))?;
        self.drop(rel, what);
        Ok(())
    }
}

/// Drop setuid/setgid bits, device nodes, sockets, named pipes and `security.*` /
/// `trusted.*` extended attributes from the work seed at `seed` and, for an
/// unprivileged apply, from its ownership record `fixups` (re-keyed to the seed, as
/// `Fixups::split_off("root")` returns it). Makes `seed` itself 0700. Returns what
/// was dropped, sorted by path, for a warning.
pub fn sanitize_work_seed(
    seed: &Path,
    fixups: Option<&mut Fixups>,
) -> Result<Vec<Dropped>, SeedError> {
    let root = openat(
        CWD,
        seed,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => SeedError::NotADirectory(seed.to_path_buf()),
        e => SeedError::Io {
            what: "open",
            path: seed.to_path_buf(),
            source: e.into(),
        },
    })?;
    let mut w = Walk {
        base: seed.to_path_buf(),
        dropped: vec![],
    };
    fchmod(&root, Mode::from_raw_mode(0o700)).map_err(w.io("make 0700", ""))?;
    w.xattrs_of_root(&root)?;
    w.dir(root.as_fd(), "")?;
    if let Some(f) = fixups {
        sanitize_fixups(f, &mut w);
    }
    w.dropped.sort();
    w.dropped.dedup();
    Ok(w.dropped)
}

/// The warning for what [`sanitize_work_seed`] dropped (`None` when nothing was):
/// one line listing every path and what it lost.
pub fn warning(dropped: &[Dropped]) -> Option<String> {
    if dropped.is_empty() {
        return None;
    }
    let list: Vec<String> = dropped.iter().map(|d| d.to_string()).collect();
    Some(format!(
        "dropped from the image's /root (it would be unsafe on the host): {}",
        list.join("; ")
    ))
}

impl Walk {
    fn xattrs_of_root(&mut self, root: &OwnedFd) -> Result<(), SeedError> {
        // The seed directory's own attributes: name it as "." in itself.
        self.xattrs(root.as_fd(), c".", "")
    }
}

/// The same rules over the record an unprivileged apply keeps (owners, modes, device
/// nodes that exist only there, xattrs to write later).
fn sanitize_fixups(fixups: &mut Fixups, w: &mut Walk) {
    let keys: Vec<String> = fixups.iter().map(|(k, _)| k.clone()).collect();
    for key in keys {
        let Some(mut f) = fixups.get(&key).cloned() else {
            continue;
        };
        let kind = match f.mode & S_IFMT {
            S_IFCHR | S_IFBLK => Some(DropKind::Device),
            S_IFIFO => Some(DropKind::Fifo),
            S_IFSOCK => Some(DropKind::Socket),
            _ if f.device.is_some() => Some(DropKind::Device),
            _ => None,
        };
        if let Some(kind) = kind {
            fixups.remove_tree(&key);
            w.drop(&key, kind);
            continue;
        }
        let mut changed = false;
        if f.mode & S_ISUID != 0 {
            w.drop(&key, DropKind::Setuid);
        }
        if f.mode & S_ISGID != 0 {
            w.drop(&key, DropKind::Setgid);
        }
        if f.mode & (S_ISUID | S_ISGID) != 0 {
            f.mode &= !(S_ISUID | S_ISGID);
            changed = true;
        }
        let before = f.xattrs.len();
        f.xattrs.retain(|(n, _)| {
            let bad = dangerous_xattr(n);
            if bad {
                w.dropped.push(Dropped {
                    path: guest_path(&key),
                    what: DropKind::Xattr(n.clone()),
                });
            }
            !bad
        });
        if changed || f.xattrs.len() != before {
            fixups.set(&key, f);
        }
    }
}
