//! One daemon per state directory, and a socket removed only by the daemon that
//! created it.
//!
//! Without a lock, two daemons started on the same state directory would both
//! sweep "stale" staging directories and adopt the same VMs, and the first one to
//! stop would unlink the socket the second one had bound (the path is the same,
//! the file is not). [`lock_state_dir`] takes an exclusive `flock` that the kernel
//! drops with the process, so a crash never leaves a stale lock; [`SocketOwner`]
//! remembers which socket file (device and inode) this daemon bound and removes
//! the path only if it still names that file.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "bangerd.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("another bangerd{} is already using {dir}; stop it first (two daemons on one state directory would corrupt each other's VMs)", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning {
        /// The state directory.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file, if readable.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or written.
    #[error("could not {action} {path}: {source}; check that the state directory exists and belongs to this user")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory; released when dropped (or when the
/// process dies).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the exclusive lock on `dir` (an existing directory) without waiting, and
/// record this process's pid in the lock file for the error message of the next
/// daemon. Call it before touching anything in the state directory.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| LockError::Io {
            action,
            path,
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(&path)
        .map_err(io("open the lock file"))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = (&mut file).take(32).read_to_string(&mut text);
            return Err(LockError::AlreadyRunning {
                dir: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err((_, e)) => return Err(io("lock")(e.into())),
    };
    lock.set_len(0).map_err(io("write"))?;
    lock.rewind().map_err(io("write"))?;
    writeln!(lock, "{}", std::process::id()).map_err(io("write"))?;
    Ok(StateLock { _lock: lock, path })
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// The socket file this daemon bound, by identity.
#[derive(Debug)]
pub struct SocketOwner {
    path: PathBuf,
    dev: u64,
    ino: u64,
    removed: bool,
}

impl SocketOwner {
    /// Remember the socket now at `path` (just bound by us).
    pub(crate) fn record(path: &Path) -> std::io::Result<SocketOwner> {
        let md = std::fs::symlink_metadata(path)?;
        Ok(SocketOwner {
            path: path.to_path_buf(),
            dev: md.dev(),
            ino: md.ino(),
            removed: false,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket path if it still names the file we bound. Returns whether
    /// it was removed; a path now naming another daemon's socket (or nothing) is
    /// left alone.
    pub fn remove(mut self) -> bool {
        self.remove_if_ours()
    }

    fn remove_if_ours(&mut self) -> bool {
        if self.removed {
            return false;
        }
        self.removed = true;
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.dev() == self.dev && md.ino() == self.ino => {
                std::fs::remove_file(&self.path).is_ok()
            }
            _ => {
                tracing::debug!(path = %self.path.display(), "the socket path no longer names our socket; leaving it");
                false
            }
        }
    }
}

impl Drop for SocketOwner {
    fn drop(&mut self) {
        self.remove_if_ours();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let first = lock_state_dir(d.path()).unwrap();
        let e = lock_state_dir(d.path()).unwrap_err();
        assert!(
            matches!(&e, LockError::AlreadyRunning { holder: Some(p), .. } if *p == std::process::id()),
            "{e:?}"
        );
        assert!(e.to_string().contains("already using"), "{e}");
        drop(first);
        let again = lock_state_dir(d.path()).unwrap();
        assert_eq!(again.path(), d.path().join(LOCK_FILE));
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(
            lock_state_dir(d.path()),
            Err(LockError::Io { .. })
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn only_the_owner_removes_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.sock");
        let _a = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let owner_a = SocketOwner::record(&path).unwrap();
        // Another daemon replaced the socket meanwhile (the old file was unlinked).
        std::fs::remove_file(&path).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!owner_a.remove(), "removed a socket it does not own");
        assert!(path.exists());
        let owner_b = SocketOwner::record(&path).unwrap();
        assert!(owner_b.remove());
        assert!(!path.exists());
    }
}
