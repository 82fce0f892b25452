//! The tar stream that carries a repository into the guest.

use crate::git::{files, Repo};
use crate::WorkspaceError;
use std::io::Write;
use std::path::Path;

/// What was shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipStats {
    /// Regular files, symlinks and directories written.
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write `repo`'s shippable files and its `.git` as a tar stream to `w`.
/// Symlinks are stored as symlinks, never followed.
pub fn write_tar(repo: &Repo, w: impl Write) -> Result<ShipStats, WorkspaceError> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut stats = ShipStats::default();
    for rel in files(repo)? {
        let full = repo.root.join(&rel);
        let md = full.symlink_metadata().map_err(io(&full))?;
        if md.is_dir() {
            // A submodule's gitlink shows up as a directory; its files are listed separately.
            continue;
        }
        b.append_path_with_name(&full, &rel).map_err(io(&full))?;
        stats.entries += 1;
        if md.is_file() {
            stats.bytes += md.len();
        }
    }
    let git_dir = repo.root.join(".git");
    if git_dir.exists() {
        stats.entries += count(&git_dir, &mut stats.bytes).map_err(io(&git_dir))?;
        b.append_dir_all(".git", &git_dir).map_err(io(&git_dir))?;
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io(&repo.root))?;
    Ok(stats)
}

fn count(dir: &Path, bytes: &mut u64) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        n += 1;
        if md.is_dir() {
            n += count(&e.path(), bytes)?;
        } else {
            *bytes += md.len();
        }
    }
    Ok(n)
}
