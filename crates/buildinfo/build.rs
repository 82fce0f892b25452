//! Stamps the build's identity into `banger-buildinfo`: version, commit, build time
//! and target, each as a `rustc-env` variable the library turns into constants.
//!
//! The script re-runs only when its inputs change (the override variables below, and
//! the git files that move when `HEAD` does), so an ordinary rebuild does not
//! recompile every binary just to refresh a timestamp.
//!
//! Overrides, for the release tooling and tests (each validated, never from a user's
//! runtime environment):
//! - `BANGER_BUILD_VERSION`: the version (default: the workspace's Cargo version);
//! - `BANGER_BUILD_COMMIT`: the commit, for a build from a source tarball without git
//!   (default: `git rev-parse --short HEAD`, else `unknown`);
//! - `SOURCE_DATE_EPOCH`: the build time in unix seconds (default: now).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/civil.rs"]
mod civil;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/civil.rs");
    for v in [
        "BANGER_BUILD_VERSION",
        "BANGER_BUILD_COMMIT",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir);

    let version = match nonempty("BANGER_BUILD_VERSION") {
        Some(v) => checked("BANGER_BUILD_VERSION", v, 64, |c| {
            c.is_ascii_alphanumeric() || ".-+".contains(c)
        }),
        None => std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "0.0.0".into()),
    };
    let (commit, source) = match nonempty("BANGER_BUILD_COMMIT") {
        Some(c) => (
            checked("BANGER_BUILD_COMMIT", c, 40, |c| c.is_ascii_alphanumeric()),
            "env",
        ),
        None => match git_commit(&root) {
            Some(c) => (c, "git"),
            None => ("unknown".into(), "none"),
        },
    };
    let secs = match nonempty("SOURCE_DATE_EPOCH") {
        Some(s) => s
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH={s:?} is not unix seconds")),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());

    println!("cargo:rustc-env=BANGER_BUILD_VERSION={version}");
    println!("cargo:rustc-env=BANGER_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=BANGER_BUILD_COMMIT_SOURCE={source}");
    println!("cargo:rustc-env=BANGER_BUILD_AT={}", civil::rfc3339(secs));
    println!("cargo:rustc-env=BANGER_BUILD_TARGET={target}");
}

fn nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// An override is compiled into every binary's `--version`: refuse anything but a
/// short run of expected characters.
fn checked(var: &str, v: String, max: usize, ok: impl Fn(char) -> bool) -> String {
    if v.len() > max || !v.chars().all(ok) {
        panic!("{var}={v:?}: expected at most {max} characters of [0-9A-Za-z.+-]");
    }
    v
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.trim().to_string())
}

/// The short commit of `HEAD`, when `root` is itself the top of a git work tree (a
/// source tarball unpacked inside some other repository must not pick up that one's
/// commit). Also tells cargo which git files to watch.
fn git_commit(root: &Path) -> Option<String> {
    let top = PathBuf::from(git(root, &["rev-parse", "--show-toplevel"])?);
    let same = match (top.canonicalize(), root.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return None;
    }
    let commit = git(root, &["rev-parse", "--short", "HEAD"])?;
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    let git_dir = abs(git(root, &["rev-parse", "--git-dir"])?);
    let common = abs(git(root, &["rev-parse", "--git-common-dir"])?);
    watch_head(&git_dir, &common);
    Some(commit)
}

/// `HEAD` moves when it is rewritten (checkout, detached commits) or when the branch
/// it names moves (a loose ref file, or `packed-refs` once git packs it). Watch only
/// paths that exist: cargo treats a missing watched path as always changed.
fn watch_head(git_dir: &Path, common: &Path) {
    let head = git_dir.join("HEAD");
    emit_if_exists(&head);
    emit_if_exists(&common.join("packed-refs"));
    let Ok(text) = std::fs::read_to_string(&head) else {
        return;
    };
    if let Some(name) = text.trim().strip_prefix("ref: ") {
        let loose = common.join(name);
        if loose.exists() {
            emit_if_exists(&loose);
        } else if let Some(dir) = loose.parent() {
            // Packed today; a new commit writes the loose file into this directory.
            emit_if_exists(dir);
        }
    }
}

fn emit_if_exists(p: &Path) {
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
