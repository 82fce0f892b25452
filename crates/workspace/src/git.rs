//! Asking git about the host repository. git itself is the authority on what is
//! tracked and what is ignored, so we shell out to it rather than re-implement
//! .gitignore semantics.

use crate::WorkspaceError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A host repository ready to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Top of the work tree.
    pub root: PathBuf,
    /// Directory name of the work tree (the default guest directory name).
    pub name: String,
    /// Full commit id of HEAD.
    pub head: String,
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| WorkspaceError::Io {
            path: "git (is git installed?)".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(WorkspaceError::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).trim().to_string()
}

/// Find the repository containing `path` and check it can be shipped.
pub fn inspect(path: &Path) -> Result<Repo, WorkspaceError> {
    let shown = path.display().to_string();
    let root = git(path, &["rev-parse", "--show-toplevel"])
        .map(text)
        .map_err(|_| WorkspaceError::NotARepo(shown.clone()))?;
    let root = PathBuf::from(root);
    let head = git(&root, &["rev-parse", "--verify", "HEAD^{commit}"])
        .map(text)
        .map_err(|_| WorkspaceError::NoCommits(root.display().to_string()))?;
    // Submodules whose work tree differs from what the superproject records cannot be
    // reproduced from commits on the other side.
    let status = text(git(&root, &["submodule", "status", "--recursive"])?);
    if let Some(line) = status.lines().find(|l| l.starts_with('+')) {
        let name = line.split_whitespace().nth(1).unwrap_or(line).to_string();
        return Err(WorkspaceError::DirtySubmodule(name));
    }
    let dirty = text(git(
        &root,
        &[
            "submodule",
            "foreach",
            "--quiet",
            "--recursive",
            "git status --porcelain | sed \"s|^|$displaypath: |\"",
        ],
    )?);
    if let Some(line) = dirty.lines().next() {
        let name = line.split(':').next().unwrap_or(line).to_string();
        return Err(WorkspaceError::DirtySubmodule(name));
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "workspace".into());
    Ok(Repo { root, name, head })
}

/// Files to ship, relative to the repo root: tracked (including submodules' tracked
/// files) plus untracked-but-not-ignored. Tracked files deleted in the work tree are
/// skipped (the guest's git will show them deleted, as the host's does).
pub fn files(repo: &Repo) -> Result<Vec<PathBuf>, WorkspaceError> {
    let mut out = vec![];
    for args in [
        &["ls-files", "-z", "--cached", "--recurse-submodules"][..],
        &["ls-files", "-z", "--others", "--exclude-standard"][..],
    ] {
        for name in git(&repo.root, args)?
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
        {
            use std::os::unix::ffi::OsStrExt;
            let rel = PathBuf::from(std::ffi::OsStr::from_bytes(name));
            if repo.root.join(&rel).symlink_metadata().is_ok() {
                out.push(rel);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The host user's git identity (`user.name`, `user.email`), if configured.
pub fn git_identity(dir: &Path) -> Option<(String, String)> {
    let get = |k: &str| {
        git(dir, &["config", "--get", k])
            .ok()
            .map(text)
            .filter(|s| !s.is_empty())
    };
    Some((get("user.name")?, get("user.email")?))
}
