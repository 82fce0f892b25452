//! The staging directory of one update: beside the install (same file system), locked
//! so two updates never interleave, removed when the update ends.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// Another `banger update` holds the lock.
    #[error("another banger update is running (lock {0}); wait for it to finish")]
    Busy(String),
    /// Creating, locking or cleaning failed.
    #[error("preparing the staging directory {path}: {source}; check that you may write there (sudo for a system install)")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A locked, fresh staging directory; removed on drop.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    _lock: std::fs::File,
}

const PREFIX: &str = ".banger-update-";

impl Staging {
    /// Lock `parent/.banger-update.lock`, sweep leftovers of interrupted updates, and
    /// create `parent/.banger-update-<pid>/` (0700).
    pub fn create(parent: &Path) -> Result<Self, StagingError> {
        let ioe = |p: &Path| {
            let path = p.display().to_string();
            move |source| StagingError::Io {
                path: path.clone(),
                source,
            }
        };
        std::fs::create_dir_all(parent).map_err(ioe(parent))?;
        let lock_path = parent.join(".banger-update.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(ioe(&lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StagingError::Busy(lock_path.display().to_string()))
            }
            Err(e) => return Err(ioe(&lock_path)(e.into())),
        }
        // We hold the lock: anything staged before was left by an interrupted update.
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(PREFIX)
                    && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = parent.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(ioe(&dir))?;
        Ok(Self { dir, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_sweeps_and_cleans() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(".banger-update-1")).unwrap();
        let s = Staging::create(t.path()).unwrap();
        assert!(!t.path().join(".banger-update-1").exists());
        assert!(matches!(
            Staging::create(t.path()),
            Err(StagingError::Busy(_))
        ));
        let p = s.path().to_path_buf();
        assert!(p.is_dir());
        drop(s);
        assert!(!p.exists());
        Staging::create(t.path()).unwrap();
    }
}
