//! Workspaces: a host git repository shipped into a VM and the changes made there
//! brought back as a patch.
//!
//! What ships: tracked files plus untracked files that are not ignored, and the whole
//! `.git` (so `git status`, `git diff` and commits work in the guest). The tar stream
//! is written straight into the ssh channel: no temporary copy of the repo on the host.
//!
//! What comes back ([`export_script`]): a binary-safe diff of the guest's tree against
//! the commit that was shipped, computed with a throw-away index so the guest's own
//! index and staging are left alone. `git apply` on a clean checkout of that commit
//! reproduces the guest's tree (ignored files excepted).

mod branch;
mod git;
mod scripts;
mod ship;

pub use branch::{commit_patch, diff_stats, valid_branch, Committed, DiffStats};
pub use git::{git_identity, inspect, Repo};
pub use scripts::{commits_script, export_script, prepare_script, shell_quote};
pub use ship::{write_tar, ShipStats};

/// Why a workspace operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path is not inside a git work tree.
    #[error("{0} is not a git repository; banger ships git repositories (run `git init` there, or pass the repository's path)")]
    NotARepo(String),
    /// The repository has no commit to diff against.
    #[error("{0} has no commits yet; commit once so exports have a base to diff against")]
    NoCommits(String),
    /// A submodule has uncommitted changes, which could not be reproduced from commits.
    #[error("submodule {0} has uncommitted changes; commit or stash them first")]
    DirtySubmodule(String),
    /// The requested guest path is outside /root (the work disk).
    #[error("guest path {0:?} must be inside /root (the VM's work disk), e.g. /root/myrepo")]
    GuestPath(String),
    /// git failed.
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        /// The git arguments.
        args: String,
        /// Where it ran.
        dir: String,
        /// Its error output.
        stderr: String,
    },
    /// Reading a file or writing the stream failed.
    #[error("shipping {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where a repository named `name` lands in the guest, or the validated override.
pub fn guest_path(name: &str, requested: Option<&str>) -> Result<String, WorkspaceError> {
    let p = match requested {
        Some(r) => r.trim_end_matches('/').to_string(),
        None => format!("/root/{name}"),
    };
    let ok = p.starts_with("/root/")
        && p.len() > "/root/".len()
        && !p.split('/').any(|c| c == ".." || c == ".")
        && !p.chars().any(|c| c.is_control());
    if !ok {
        return Err(WorkspaceError::GuestPath(p));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_stay_under_root() {
        assert_eq!(guest_path("repo", None).unwrap(), "/root/repo");
        assert_eq!(
            guest_path("x", Some("/root/src/app/")).unwrap(),
            "/root/src/app"
        );
        for bad in [
            "/tmp/x",
            "/root",
            "/root/",
            "/root/../etc",
            "root/x",
            "/rootx/y",
        ] {
            assert!(guest_path("x", Some(bad)).is_err(), "{bad}");
        }
    }
}
