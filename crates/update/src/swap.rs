//! Putting staged files in place, keeping the previous ones, and undoing it.
//!
//! Several files cannot change in one atomic step, so each file changes atomically
//! (`rename` over the old one, on the same file system) and the set is transactional:
//! before a file is replaced, the old one is hard-linked to `.<name>.previous` beside
//! it (a link, so the running binary is untouched and no bytes are copied); if any step
//! fails, the files already replaced are put back in reverse order. Every directory
//! touched is fsynced before we report success. The backups stay after a successful
//! update, for a manual rollback (see docs/releases.md).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What failed while swapping.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// An installed path is a symlink, directory or other non-file: we do not replace
    /// what we did not expect.
    #[error("{0} is not a regular file (a symlink or directory?); refusing to replace it. Replace it with the file itself, or reinstall banger")]
    NotAFile(String),
    /// A file system step failed (and was undone).
    #[error("{step} {path}: {source}")]
    Io {
        /// What we were doing.
        step: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Putting a file back failed: the install is half old, half new.
    #[error("restoring {path} from {backup} failed ({source}); copy {backup} to {path} by hand")]
    Restore {
        /// The installed path.
        path: String,
        /// Its backup.
        backup: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One staged file and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The verified file in the staging directory.
    pub staged: PathBuf,
    /// Its installed path.
    pub dest: PathBuf,
}

#[derive(Debug)]
struct Done {
    dest: PathBuf,
    backup: Option<PathBuf>,
}

/// Files that were replaced, for [`Swapped::rollback`].
#[derive(Debug)]
pub struct Swapped {
    done: Vec<Done>,
}

/// The backup of an installed file: `.<name>.previous` beside it.
pub fn backup_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.previous"))
}

fn io<'a>(step: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> SwapError + 'a {
    move |source| SwapError::Io {
        step,
        path: path.display().to_string(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), SwapError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Replace `dest` with `staged` atomically (rename on one file system; a synced copy
/// beside `dest`, then rename, across file systems).
fn place(staged: &Path, dest: &Path) -> Result<(), SwapError> {
    match std::fs::rename(staged, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc_exdev()) => {
            let tmp = dest.with_file_name(format!(
                ".{}.banger-new",
                dest.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let _ = std::fs::remove_file(&tmp);
            let mode = std::fs::metadata(staged)
                .map_err(io("reading", staged))?
                .permissions()
                .mode();
            let mut from = std::fs::File::open(staged).map_err(io("reading", staged))?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .open(&tmp)
                .map_err(io("creating", &tmp))?;
            std::io::copy(&mut from, &mut to).map_err(io("copying to", &tmp))?;
            to.sync_all().map_err(io("syncing", &tmp))?;
            std::fs::rename(&tmp, dest).map_err(io("renaming into place", dest))
        }
        Err(e) => Err(io("renaming into place", dest)(e)),
    }
}

fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

/// Check every destination, then replace them in order, keeping backups. On error the
/// files already replaced are restored before the error is returned.
pub fn swap(placements: &[Placement]) -> Result<Swapped, SwapError> {
    for p in placements {
        match std::fs::symlink_metadata(&p.dest) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(SwapError::NotAFile(p.dest.display().to_string()))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting", &p.dest)(e)),
        }
    }
    let mut swapped = Swapped { done: Vec::new() };
    for p in placements {
        if let Err(e) = swap_one(p, &mut swapped) {
            // The error that matters is the first one; a failed restore is reported
            // instead because it needs the user's hands.
            return Err(match swapped.rollback() {
                Ok(()) => e,
                Err(r) => r,
            });
        }
    }
    Ok(swapped)
}

fn swap_one(p: &Placement, swapped: &mut Swapped) -> Result<(), SwapError> {
    let dir = p.dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let backup = if p.dest.exists() {
        let b = backup_path(&p.dest);
        let tmp = b.with_extension("previous-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(&p.dest, &tmp).map_err(io("keeping a backup of", &p.dest))?;
        std::fs::rename(&tmp, &b).map_err(io("keeping a backup of", &p.dest))?;
        Some(b)
    } else {
        None
    };
    place(&p.staged, &p.dest)?;
    swapped.done.push(Done {
        dest: p.dest.clone(),
        backup,
    });
    sync_dir(dir)
}

impl Swapped {
    /// Put every replaced file back (new files are removed), newest first.
    pub fn rollback(mut self) -> Result<(), SwapError> {
        let mut first_err = None;
        while let Some(d) = self.done.pop() {
            let r = match &d.backup {
                Some(b) => std::fs::rename(b, &d.dest).map_err(|source| SwapError::Restore {
                    path: d.dest.display().to_string(),
                    backup: b.display().to_string(),
                    source,
                }),
                None => std::fs::remove_file(&d.dest).map_err(io("removing", &d.dest)),
            };
            if let Some(dir) = d.dest.parent() {
                let _ = sync_dir(dir);
            }
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The backups kept (for the report).
    pub fn backups(&self) -> Vec<PathBuf> {
        self.done.iter().filter_map(|d| d.backup.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Vec<Placement>) {
        let t = tempfile::tempdir().unwrap();
        let inst = t.path().join("bin");
        let stage = t.path().join("stage");
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::create_dir_all(&stage).unwrap();
        let mut ps = Vec::new();
        for n in ["banger-agent", "bangerd", "banger"] {
            std::fs::write(inst.join(n), format!("old {n}")).unwrap();
            std::fs::write(stage.join(n), format!("new {n}")).unwrap();
            ps.push(Placement {
                staged: stage.join(n),
                dest: inst.join(n),
            });
        }
        std::fs::write(stage.join("banger-helper"), "new helper").unwrap();
        ps.push(Placement {
            staged: stage.join("banger-helper"),
            dest: inst.join("banger-helper"),
        });
        (t, ps)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn swaps_keeps_backups_and_rolls_back() {
        let (_t, ps) = setup();
        let s = swap(&ps).unwrap();
        for p in &ps {
            let n = p.dest.file_name().unwrap().to_str().unwrap();
            assert!(read(&p.dest).starts_with("new"), "{n}");
        }
        assert_eq!(s.backups().len(), 3, "no backup for a new file");
        assert_eq!(read(&backup_path(&ps[1].dest)), "old bangerd");
        s.rollback().unwrap();
        for p in &ps[..3] {
            assert!(read(&p.dest).starts_with("old"));
            assert!(!backup_path(&p.dest).exists());
        }
        assert!(!ps[3].dest.exists(), "a file new in the release is removed");
    }

    #[test]
    fn a_failure_midway_restores_the_rest() {
        let (_t, ps) = setup();
        // The third staged file vanished: banger-agent and bangerd are already new.
        std::fs::remove_file(&ps[2].staged).unwrap();
        let e = swap(&ps).unwrap_err();
        assert!(matches!(e, SwapError::Io { .. }), "{e}");
        for p in &ps[..3] {
            assert!(read(&p.dest).starts_with("old"), "{}", p.dest.display());
        }
        assert!(!ps[3].dest.exists());
    }

    #[test]
    fn symlinked_destinations_are_refused_before_anything_changes() {
        let (t, ps) = setup();
        let real = t.path().join("real-bangerd");
        std::fs::write(&real, "real").unwrap();
        std::fs::remove_file(&ps[1].dest).unwrap();
        std::os::unix::fs::symlink(&real, &ps[1].dest).unwrap();
        assert!(matches!(swap(&ps), Err(SwapError::NotAFile(_))));
        assert_eq!(read(&ps[0].dest), "old banger-agent");
        assert_eq!(read(&real), "real");
    }
}
