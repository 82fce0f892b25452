//! `image build debian` as an unprivileged user: mmdebstrap's unshare mode, the
//! no-follow applier recording owners, debugfs writing them. The test (root) creates a
//! user with a subordinate id range, runs the build as that user (this test binary
//! re-executed), and checks in the ext4 image that owners, setuid bits, device nodes
//! and banger's customisation are what a root build has. It needs Debian's archive,
//! mmdebstrap, uidmap and a static agent (`make agent` or `BANGER_AGENT`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oci_support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use banger_image::{build_debian, BuildRequest};
use oci_support::{debugfs_cmd, debugfs_stat, have_e2fsprogs, is_root};

const USER: &str = "banger-imgtest";

/// Entry point of the build, run as [`USER`]. A normal test run passes through here
/// and does nothing.
#[test]
fn unshare_build_entry() {
    let Ok(staging) = std::env::var("UNSHARE_BUILD_STAGING") else {
        println!("skipping: entry point of the unprivileged build; the build test runs it as another user");
        return;
    };
    assert!(
        !rustix::process::geteuid().is_root(),
        "must run unprivileged"
    );
    let staging = PathBuf::from(staging);
    let req = BuildRequest {
        release: "bookworm".into(),
        extra_packages: vec![],
        mirror: std::env::var("BANGER_DEBIAN_MIRROR").ok(),
        agent: PathBuf::from(std::env::var("UNSHARE_BUILD_AGENT").unwrap()),
        staging: staging.clone(),
    };
    let t = Instant::now();
    let mut last = String::new();
    let built = build_debian(&req, &mut |stage, detail| {
        if stage != last {
            println!(
                "[{:>6.1}s] {stage} {}",
                t.elapsed().as_secs_f64(),
                detail.unwrap_or_default()
            );
            last = stage.to_string();
        }
    })
    .unwrap();
    println!(
        "BUILT in {:.1}s: kernel {}, {} MiB",
        t.elapsed().as_secs_f64(),
        built.kernel_release,
        built.size_bytes >> 20
    );
    // The owner daemon's next step: a work disk from the seed, still unprivileged.
    let work = staging.join("work.ext4");
    banger_image::create_work_disk(
        &work,
        512,
        Some(&staging.join("work-seed")),
        "ssh-ed25519 AAAAtest banger",
    )
    .unwrap();
    println!("WORK DISK ok");
}

fn skip(reason: &str) {
    println!("skipping the unprivileged Debian build: {reason}");
}

fn agent() -> Option<PathBuf> {
    let p = std::env::var_os("BANGER_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/guest/banger-agent")
        });
    p.exists().then_some(p)
}

/// Create [`USER`] with a subordinate id range if needed; its uid.
fn test_user() -> u32 {
    let exists = Command::new("id").args(["-u", USER]).output().unwrap();
    if !exists.status.success() {
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {USER}");
    }
    let uid: u32 = String::from_utf8_lossy(
        &Command::new("id")
            .args(["-u", USER])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if banger_image::debian_unshare::subid_range(&text, uid, Some(USER)) < 65536 {
            let st = Command::new("usermod")
                .args([flag, "2000000-2065535", USER])
                .status()
                .unwrap();
            assert!(st.success(), "usermod {flag}");
        }
    }
    uid
}

#[test]
fn an_unprivileged_user_builds_the_same_debian_image() {
    if !is_root() {
        return skip("needs root to create the unprivileged test user");
    }
    if Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("mmdebstrap is not installed (apt-get install mmdebstrap)");
    }
    if !Path::new("/usr/bin/newuidmap").exists() {
        return skip("Debian's uidmap is not installed (apt-get install uidmap)");
    }
    if !have_e2fsprogs() {
        return skip("e2fsprogs is not installed");
    }
    let Some(agent) = agent() else {
        return skip("no static agent (run `make agent`, or set BANGER_AGENT)");
    };
    let uid = test_user();
    let work = tempfile::Builder::new()
        .prefix("banger-unshare-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let staging = work.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::os::unix::fs::chown(&staging, Some(uid), Some(uid)).unwrap();
    let agent_copy = work.path().join("banger-agent");
    std::fs::copy(&agent, &agent_copy).unwrap();

    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unshare_build_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", format!("/home/{USER}"))
        .env("UNSHARE_BUILD_STAGING", &staging)
        .env("UNSHARE_BUILD_AGENT", &agent_copy)
        .current_dir(work.path())
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("WORK DISK ok"),
        "the unprivileged build failed after {:?}:\n{}",
        t.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "unprivileged build, as uid {uid}: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let img = staging.join("rootfs.ext4");
    let st =
        |p: &str| debugfs_stat(&img, p).unwrap_or_else(|| panic!("{p} missing from the image"));
    // Owners and modes as Debian's packages set them, not the builder's uid.
    let passwd = st("/usr/bin/passwd");
    assert_eq!(
        (passwd.uid, passwd.gid, passwd.mode & 0o7777),
        (0, 0, 0o4755)
    );
    let shadow = st("/etc/shadow");
    assert_eq!(
        (shadow.uid, shadow.gid, shadow.mode & 0o777),
        (0, 42, 0o640)
    );
    let mail = st("/var/mail");
    assert_eq!((mail.gid, mail.mode & 0o7777), (8, 0o2775));
    let ls = st("/usr/bin/ls");
    assert_eq!((ls.uid, ls.gid), (0, 0), "unrecorded paths belong to root");
    // Device nodes exist in the image though no device was made on the host.
    let null = st("/dev/null");
    assert!(null.kind.contains("character"), "{}", null.raw);
    // banger's customisation, and /root emptied into the work seed.
    let agent_in = st("/usr/local/bin/banger-agent");
    assert_eq!((agent_in.uid, agent_in.mode & 0o777), (0, 0o755));
    let root = st("/root");
    assert_eq!((root.uid, root.mode & 0o777), (0, 0o700));
    assert!(!debugfs_cmd(&img, "ls /root").contains(".bashrc"));
    assert!(staging.join("vmlinuz").exists() && staging.join("initrd.img").exists());
    assert!(
        !staging.join("tree").exists() && !staging.join("rootfs.tar").exists(),
        "no leftovers"
    );
    // The work disk the unprivileged daemon made: the seed's files are root's.
    let bashrc = debugfs_stat(&staging.join("work.ext4"), "/.bashrc").unwrap();
    assert_eq!((bashrc.uid, bashrc.gid), (0, 0));
}
