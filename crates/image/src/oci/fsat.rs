//! File operations relative to directory descriptors, never following a symlink.
//!
//! Layer content decides which names exist in the staging tree, including symlinks
//! pointing anywhere on the host. A path-based API (`std::fs::create_dir_all`,
//! `File::create`) would follow such a symlink planted by an earlier entry and write
//! outside the staging directory. Here every directory is reached one component at a
//! time with `openat(O_DIRECTORY | O_NOFOLLOW)` from a descriptor of the staging root,
//! and every final operation is an `*at` call with no-follow semantics, so the kernel
//! itself guarantees we never leave the tree.

use rustix::fs::{
    fchmod, fchown, mkdirat, openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags,
};
use rustix::io::Errno;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Flags for opening a directory we will list or chmod, refusing symlinks.
pub(crate) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Why a directory walk stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// This ancestor (a key like `a/b`) is a symlink.
    Symlink(String),
    /// This ancestor exists and is neither a directory nor a symlink.
    NotDir(String),
    /// This ancestor does not exist (only when not creating).
    Missing(String),
    /// The OS refused something else.
    Io(String, std::io::Error),
}

/// The staging root, with a one-entry cache of the last directory reached: tar
/// entries come grouped by directory, so most walks are a cache hit or one step
/// below the cached directory.
pub(crate) struct Root {
    fd: OwnedFd,
    cache: Option<(Vec<String>, OwnedFd)>,
    /// Give directories created implicitly (missing parents) owner 0:0. Only when we
    /// are root and apply owners natively.
    chown_implicit: bool,
}

impl Root {
    /// Open the staging directory (trusted: the caller chose it).
    pub(crate) fn open(path: &Path, chown_implicit: bool) -> std::io::Result<Root> {
        let fd = openat(rustix::fs::CWD, path, dir_flags(), Mode::empty())?;
        Ok(Root {
            fd,
            cache: None,
            chown_implicit,
        })
    }

    /// The root directory itself.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Forget the cached directory: call after removing any directory, since the
    /// cached descriptor could then refer to a directory no longer in the tree.
    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// A descriptor of directory `comps`, walked without following symlinks. With
    /// `create`, missing directories are made (mode 0755) and their keys are pushed on
    /// `created`, in order.
    pub(crate) fn dir(
        &mut self,
        comps: &[String],
        create: bool,
        created: &mut Vec<String>,
    ) -> Result<OwnedFd, WalkError> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| WalkError::Io(comps.join("/"), e))
        };
        if comps.is_empty() {
            return dup(self.fd.as_fd());
        }
        if let Some((p, fd)) = &self.cache {
            if p.as_slice() == comps {
                return dup(fd.as_fd());
            }
        }
        let (mut done, mut cur) = match self.cache.take() {
            Some((p, fd)) if comps.starts_with(&p) => (p.len(), Some(fd)),
            _ => (0, None),
        };
        while done < comps.len() {
            let parent = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.fd.as_fd(),
            };
            let key = comps[..=done].join("/");
            let next = self.step(parent, &comps[done], &key, create, created)?;
            cur = Some(next);
            done += 1;
        }
        let Some(fd) = cur else {
            return dup(self.fd.as_fd());
        };
        let out = dup(fd.as_fd())?;
        self.cache = Some((comps.to_vec(), fd));
        Ok(out)
    }

    fn step(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        key: &str,
        create: bool,
        created: &mut Vec<String>,
    ) -> Result<OwnedFd, WalkError> {
        let io = |e: Errno| WalkError::Io(key.to_string(), e.into());
        match openat(parent, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if create => {
                mkdirat(parent, name, Mode::from_raw_mode(0o755)).map_err(io)?;
                let fd = openat(parent, name, dir_flags(), Mode::empty()).map_err(io)?;
                // mkdir's mode went through the umask; implicit parents are 0755 root
                // directories, as in Docker and containerd.
                fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(io)?;
                if self.chown_implicit {
                    fchown(
                        &fd,
                        Some(rustix::fs::Uid::ROOT),
                        Some(rustix::fs::Gid::ROOT),
                    )
                    .map_err(io)?;
                }
                created.push(key.to_string());
                Ok(fd)
            }
            Err(Errno::NOENT) => Err(WalkError::Missing(key.to_string())),
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        Err(WalkError::Symlink(key.to_string()))
                    }
                    Ok(_) => Err(WalkError::NotDir(key.to_string())),
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// What is at `name` in `dir`, without following a symlink; `None` if nothing.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<FileType>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Remove `name` from `dir`, recursively if it is a directory, never following a
/// symlink (a symlink is removed, not its target). Returns what was there.
///
/// The walk is iterative and holds one directory descriptor at a time, so neither
/// the thread stack nor the descriptor table limits the depth of a tree it can
/// remove (see [`remove_contents`]).
pub(crate) fn remove_all_at<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    name: P,
) -> std::io::Result<Option<FileType>> {
    let kind = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => FileType::from_raw_mode(st.st_mode),
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if kind == FileType::Directory {
        let fd = openat(dir, name, dir_flags(), Mode::empty())?;
        remove_contents(fd)?;
        unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(Some(kind))
}

/// One directory on the way down: its name in its parent, its identity (to check
/// that `..` leads back to the parent we came from) and the names still to remove.
struct Level {
    name: std::ffi::CString,
    id: (u64, u64),
    pending: Vec<std::ffi::CString>,
}

fn identity(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Empty directory `top`, depth first, without recursion. Going down opens each
/// child with `O_NOFOLLOW`; going back up opens `..` and checks it is the directory
/// we came from (same device and inode), so a directory moved away meanwhile stops
/// the removal instead of letting it continue somewhere else.
fn remove_contents(top: OwnedFd) -> std::io::Result<()> {
    let mut cur = top;
    let mut stack = vec![Level {
        name: std::ffi::CString::default(),
        id: identity(cur.as_fd())?,
        pending: list(cur.as_fd())?,
    }];
    while let Some(level) = stack.last_mut() {
        if let Some(child) = level.pending.pop() {
            let st = match statat(&cur, child.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let fd = openat(&cur, child.as_c_str(), dir_flags(), Mode::empty())?;
                let next = Level {
                    name: child,
                    id: identity(fd.as_fd())?,
                    pending: list(fd.as_fd())?,
                };
                stack.push(next);
                cur = fd;
            } else {
                match unlinkat(&cur, child.as_c_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            continue;
        }
        // `cur` is empty now.
        if stack.len() == 1 {
            return Ok(());
        }
        let Some(done) = stack.pop() else {
            return Ok(());
        };
        let parent = openat(&cur, c"..", dir_flags(), Mode::empty())?;
        let want = stack.last().map(|l| l.id);
        if Some(identity(parent.as_fd())?) != want {
            return Err(std::io::Error::other(
                "a directory was moved while its tree was being removed",
            ));
        }
        unlinkat(&parent, done.name.as_c_str(), AtFlags::REMOVEDIR)?;
        cur = parent;
    }
    Ok(())
}

/// The names in directory `fd` (without `.` and `..`). Collected first so callers
/// can remove entries without disturbing the listing.
pub(crate) fn list(fd: BorrowedFd<'_>) -> std::io::Result<Vec<std::ffi::CString>> {
    let mut out = vec![];
    let mut d = Dir::read_from(fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n: &CStr = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_tree_deeper_than_the_stack_and_fd_table_allow() {
        // 5 000 levels: the old recursive removal needed a stack frame and an open
        // descriptor per level (EMFILE at ~1 000 with the default limit, a stack
        // overflow further down).
        let t = tempfile::tempdir().unwrap();
        let top = openat(rustix::fs::CWD, t.path(), dir_flags(), Mode::empty()).unwrap();
        mkdirat(&top, "deep", Mode::from_raw_mode(0o755)).unwrap();
        let mut cur = openat(&top, "deep", dir_flags(), Mode::empty()).unwrap();
        for i in 0..5_000 {
            if i % 100 == 0 {
                std::fs::write(
                    format!("/proc/self/fd/{}/f", std::os::fd::AsRawFd::as_raw_fd(&cur)),
                    b"x",
                )
                .unwrap();
            }
            mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            cur = openat(&cur, "d", dir_flags(), Mode::empty()).unwrap();
        }
        drop(cur);
        // Run on a small stack so that recursion would overflow for sure.
        let dir = t.path().to_path_buf();
        let r = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let top = openat(rustix::fs::CWD, &dir, dir_flags(), Mode::empty()).unwrap();
                remove_all_at(top.as_fd(), "deep").map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r, Ok(Some(FileType::Directory)));
        assert!(!t.path().join("deep").exists());
    }

    #[test]
    fn symlinks_inside_are_removed_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join("keep/file"), "x").unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        let root = openat(rustix::fs::CWD, t.path(), dir_flags(), Mode::empty()).unwrap();
        remove_all_at(root.as_fd(), "tree").unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep/file").exists());
    }
}
