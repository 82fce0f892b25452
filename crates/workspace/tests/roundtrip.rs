//! Ship a real repository, change it "in the guest" (a local directory standing in for
//! the VM: the scripts are the same ones ssh runs), export, apply on a clean clone of
//! the shipped commit, and compare trees byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_workspace::{export_script, inspect, write_tar, WorkspaceError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn git_repo(dir: &Path) {
    sh(
        dir,
        "git init -q -b main . && git config user.email t@example.com && git config user.name T",
    );
}

/// Every non-ignored file under `root` (except .git) with its bytes and exec bit.
fn tree(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, bool)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, bool)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.file_name().unwrap() == ".git" || p.file_name().unwrap() == "ignored.log" {
                continue;
            }
            let md = p.symlink_metadata().unwrap();
            if md.is_dir() {
                walk(root, &p, out);
            } else {
                use std::os::unix::fs::PermissionsExt;
                let content = if md.file_type().is_symlink() {
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .as_bytes()
                        .to_vec()
                } else {
                    std::fs::read(&p).unwrap()
                };
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (content, md.permissions().mode() & 0o111 != 0),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn ship_change_export_apply_reproduces_the_tree() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("myrepo");
    std::fs::create_dir_all(host.join("src")).unwrap();
    git_repo(&host);
    std::fs::write(host.join("src/main.c"), "int main(){return 0;}\n").unwrap();
    std::fs::write(
        host.join("blob.bin"),
        (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(host.join("old-name.txt"), "rename me\n".repeat(50)).unwrap();
    std::fs::write(host.join("doomed.txt"), "delete me\n").unwrap();
    std::fs::write(host.join(".gitignore"), "ignored.log\n").unwrap();
    sh(&host, "git add -A && git commit -q -m base");
    // Uncommitted host state ships too: an untracked file and an ignored one (not shipped).
    std::fs::write(host.join("untracked.txt"), "new on host\n").unwrap();
    std::fs::write(host.join("ignored.log"), "noise\n").unwrap();

    let repo = inspect(&host.join("src")).unwrap();
    assert_eq!(repo.name, "myrepo");
    let mut tar = vec![];
    let stats = write_tar(&repo, &mut tar).unwrap();
    assert!(stats.bytes >= 70_000);

    // "Guest": unpack, then edit, add, delete, rename, chmod, binary change, commit.
    let guest = t.path().join("guest/myrepo");
    std::fs::create_dir_all(&guest).unwrap();
    let mut ar = tar::Archive::new(&tar[..]);
    ar.unpack(&guest).unwrap();
    assert!(guest.join("untracked.txt").exists());
    assert!(
        !guest.join("ignored.log").exists(),
        "ignored files must not ship"
    );
    assert_eq!(sh(&guest, "git status --porcelain"), b"?? untracked.txt\n");
    sh(
        &guest,
        "echo 'int x;' >> src/main.c && rm doomed.txt && git mv old-name.txt new-name.txt \
         && printf '\\000\\001\\002' >> blob.bin && mkdir -p deep/er && echo hi > deep/er/added.txt \
         && printf '#!/bin/sh\\n' > run.sh && chmod +x run.sh && ln -s src/main.c link \
         && echo noise > ignored.log && git -c user.email=g@x -c user.name=G commit -q -am 'guest commit'",
    );
    let patch = sh(&guest, &export_script(guest.to_str().unwrap(), &repo.head));
    // The guest's own index was not touched by the export.
    assert!(sh(&guest, "git diff --cached --name-only").is_empty());

    // Apply on a clean clone of the shipped commit: trees identical.
    let check = t.path().join("check");
    sh(
        t.path(),
        &format!(
            "git clone -q {} check && cd check && git checkout -q {}",
            host.display(),
            repo.head
        ),
    );
    std::fs::write(t.path().join("p.patch"), &patch).unwrap();
    sh(&check, "git apply --binary ../p.patch");
    assert_eq!(tree(&check), tree(&guest));
}

#[test]
fn refuses_what_cannot_ship() {
    let t = tempfile::tempdir().unwrap();
    assert!(matches!(
        inspect(t.path()),
        Err(WorkspaceError::NotARepo(_))
    ));
    git_repo(t.path());
    assert!(matches!(
        inspect(t.path()),
        Err(WorkspaceError::NoCommits(_))
    ));

    // A submodule with uncommitted changes.
    let sub = tempfile::tempdir().unwrap();
    git_repo(sub.path());
    sh(sub.path(), "echo a > a && git add a && git commit -q -m a");
    sh(t.path(), "echo x > x && git add x && git commit -q -m x");
    sh(
        t.path(),
        &format!(
            "git -c protocol.file.allow=always submodule add -q {} sub && git commit -q -m sub",
            sub.path().display()
        ),
    );
    assert!(inspect(t.path()).is_ok());
    std::fs::write(t.path().join("sub/a"), "changed\n").unwrap();
    assert!(matches!(inspect(t.path()), Err(WorkspaceError::DirtySubmodule(s)) if s == "sub"));
}
