//! A guest's changes as a branch in the host repository, without touching the user's
//! work tree, index, HEAD or current branch (parallel attempts, `vm run --parallel`).
//!
//! Only git plumbing, on a throw-away index file (`GIT_INDEX_FILE`): the shipped
//! commit is read into it, the guest's patch is applied to it alone (`git apply
//! --cached`, which never writes the work tree), and the result becomes a tree, a
//! commit on top of the shipped commit, and a new ref. The patch comes from a guest and
//! is treated as hostile: git refuses paths outside the tree, and `update-ref` is
//! told the ref must not exist yet, so no existing branch is ever moved.

use crate::git::git;
use crate::WorkspaceError;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What a committed attempt changed against its base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Files changed.
    pub files: u64,
    /// Lines added (binary files count none).
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
}

/// The commit made and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Full commit id.
    pub commit: String,
    /// Against the base commit.
    pub stats: DiffStats,
}

/// Whether `name` is acceptable as a branch name (`git check-ref-format --branch`).
pub fn valid_branch(repo: &Path, name: &str) -> bool {
    git(repo, &["check-ref-format", "--branch", name]).is_ok()
}

/// Commit `patch` (a `git diff --binary` against `base`) on top of `base` as the new
/// branch `branch` of the repository at `repo`. Fails, changing nothing, if the
/// branch exists.
pub fn commit_patch(
    repo: &Path,
    base: &str,
    patch: &[u8],
    branch: &str,
    message: &str,
) -> Result<Committed, WorkspaceError> {
    let tmp = tempfile::Builder::new()
        .prefix("banger-index-")
        .tempdir()
        .map_err(|source| WorkspaceError::Io {
            path: "a temporary directory for the index".into(),
            source,
        })?;
    let index = tmp.path().join("index");
    let run = |args: &[&str], stdin: Option<&[u8]>| plumbing(repo, &index, args, stdin);
    run(&["read-tree", base], None)?;
    if !patch.is_empty() {
        run(
            &["apply", "--cached", "--binary", "--whitespace=nowarn", "-"],
            Some(patch),
        )?;
    }
    let tree = text(run(&["write-tree"], None)?);
    let commit = text(run(
        &["commit-tree", &tree, "-p", base, "-m", message],
        None,
    )?);
    let refname = format!("refs/heads/{branch}");
    // The empty old value: create only, never move an existing branch.
    run(&["update-ref", &refname, &commit, ""], None)?;
    let stats = diff_stats(repo, base, &commit)?;
    Ok(Committed { commit, stats })
}

/// Files changed and lines added and removed between two commits.
pub fn diff_stats(repo: &Path, from: &str, to: &str) -> Result<DiffStats, WorkspaceError> {
    let out = git(repo, &["diff-tree", "-r", "--numstat", "-M", from, to])?;
    let mut s = DiffStats::default();
    for line in String::from_utf8_lossy(&out).lines() {
        let mut f = line.split('\t');
        let (Some(a), Some(d)) = (f.next(), f.next()) else {
            continue;
        };
        s.files += 1;
        s.insertions += a.parse::<u64>().unwrap_or(0);
        s.deletions += d.parse::<u64>().unwrap_or(0);
    }
    Ok(s)
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).trim().to_string()
}

/// git with our index file and, when the user has no identity, banger's (so the
/// commit never fails for want of `user.name`).
fn plumbing(
    repo: &Path,
    index: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Vec<u8>, WorkspaceError> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_INDEX_FILE", index);
    if git(repo, &["var", "GIT_COMMITTER_IDENT"]).is_err() {
        for (k, v) in [
            ("GIT_AUTHOR_NAME", "banger"),
            ("GIT_AUTHOR_EMAIL", "banger@localhost"),
            ("GIT_COMMITTER_NAME", "banger"),
            ("GIT_COMMITTER_EMAIL", "banger@localhost"),
        ] {
            cmd.env(k, v);
        }
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let io = |source| WorkspaceError::Io {
        path: "git (is git installed?)".into(),
        source,
    };
    let mut child = cmd.spawn().map_err(io)?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        // A write error shows up as git's own failure below.
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        return Err(WorkspaceError::Git {
            args: args.join(" "),
            dir: repo.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, line: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Work tree, index and HEAD are byte-identical afterwards; the branch's tree is
    /// the "guest's" tree (made here in a clone, exported as banger's script does).
    #[test]
    fn commits_a_patch_as_a_branch_leaving_the_checkout_alone() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        sh(&host, "git init -q -b main && echo one > a.txt && printf '\\0\\1' > bin && git add . && git commit -qm base && echo dirty >> a.txt && echo staged > s.txt && git add s.txt");
        let base = sh(&host, "git rev-parse HEAD");
        let before = sh(
            &host,
            "cat .git/index | sha256sum; cat .git/HEAD; git status --porcelain; cat a.txt",
        );
        // The "guest": a copy that changes, adds, removes and writes binary.
        let guest = d.path().join("guest");
        sh(d.path(), "git clone -q host guest");
        sh(&guest, "echo two >> a.txt && echo new > out.txt && rm bin && printf '\\2\\3' > bin2 && mkdir -p d && echo x > d/y");
        let script = crate::export_script(guest.to_str().unwrap(), &base);
        let patch = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(patch.status.success());
        let c = commit_patch(&host, &base, &patch.stdout, "banger/r1/1", "attempt 1").unwrap();
        assert_eq!(
            before,
            sh(
                &host,
                "cat .git/index | sha256sum; cat .git/HEAD; git status --porcelain; cat a.txt"
            )
        );
        assert_eq!(sh(&host, "git rev-parse banger/r1/1"), c.commit);
        assert_eq!(sh(&host, "git rev-parse banger/r1/1^"), base);
        assert_eq!(
            sh(&host, "git ls-tree -r --name-only banger/r1/1"),
            "a.txt\nbin2\nd/y\nout.txt"
        );
        assert_eq!(sh(&host, "git show banger/r1/1:a.txt"), "one\ntwo");
        assert_eq!(c.stats.files, 5);
        // a.txt, out.txt, d/y and bin2 (no NUL: text) add a line each.
        assert_eq!((c.stats.insertions, c.stats.deletions), (4, 0));
        // An existing branch is never moved; an empty patch is an empty commit.
        assert!(commit_patch(&host, &base, b"", "banger/r1/1", "again").is_err());
        assert_eq!(sh(&host, "git rev-parse banger/r1/1"), c.commit);
        let e = commit_patch(&host, &base, b"", "banger/r1/2", "nothing").unwrap();
        assert_eq!(e.stats, DiffStats::default());
        // A hostile patch escaping the tree is refused and leaves no branch.
        let evil = b"diff --git a/../x b/../x\nnew file mode 100644\n--- /dev/null\n+++ b/../x\n@@ -0,0 +1 @@\n+x\n";
        assert!(commit_patch(&host, &base, evil, "banger/r1/3", "evil").is_err());
        assert!(sh(&host, "git branch --list 'banger/r1/3'").is_empty());
        assert!(valid_branch(&host, "banger/r1/3"));
        assert!(!valid_branch(&host, "banger/../x"));
    }
}
