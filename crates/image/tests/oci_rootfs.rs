//! Applied trees → ext4 images, read back with debugfs: owners, modes (setuid
//! included), device nodes, links and xattrs must be what the layers said, whether
//! the apply ran as root (owners in the host tree) or not (owners recorded and
//! written by debugfs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::oci::{build_rootfs, Applier, ApplyOptions, OwnerMode};
use oci_support::*;
use std::path::Path;
use tar::EntryType;

const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn image_layers() -> Vec<Vec<u8>> {
    vec![
        Layer::new()
            .dir("./", ROOT)
            .dir("etc", ROOT)
            .file("etc/passwd", m(0o644, 0, 0), b"root:x:0:0::/root:/bin/sh\n")
            .file("etc/gone", ROOT, b"gone")
            .dir("usr/bin", ROOT)
            .file("usr/bin/sudo", m(0o4755, 0, 0), b"#!suid")
            .hardlink("usr/bin/sudoedit", "usr/bin/sudo")
            .dir("home/dev", m(0o750, 1000, 1000))
            .file("home/dev/.profile", m(0o640, 1000, 1000), b"PS1=x")
            // Names real images have (systemd's escaped units, spaces, quotes), which
            // the debugfs pass carries quoted.
            .dir("home/dev/odd dir", m(0o750, 1000, 1000))
            .file(
                "home/dev/odd dir/it's \"quoted\" \\x2d",
                m(0o640, 1000, 1001),
                b"odd",
            )
            // Before its directory's own entry, which must not forget it.
            .device("dev/odd node", EntryType::Char, 1, 5, m(0o600, 0, 0))
            .dir("dev", ROOT)
            .device("dev/null", EntryType::Char, 1, 3, m(0o666, 0, 0))
            .device("dev/sda", EntryType::Block, 8, 0, m(0o660, 0, 6))
            .symlink("bin", "usr/bin")
            .dir("root", m(0o700, 0, 0))
            .file("root/.bashrc", m(0o600, 0, 0), b"# hi")
            .file_with_pax(
                "usr/bin/ping",
                m(0o755, 0, 0),
                b"elf",
                &[("SCHILY.xattr.security.capability", &CAP)],
            )
            .finish(),
        Layer::new()
            .whiteout("etc/.wh.gone")
            .file("etc/shadow", m(0o640, 0, 42), b"root:*:")
            .finish(),
    ]
}

/// Apply the image into `dir/staging` with `owners`, build `dir/rootfs.ext4`.
fn build(dir: &Path, owners: OwnerMode, before_mkfs: impl FnOnce(&Path)) -> std::path::PathBuf {
    let staging = dir.join("staging");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    let mut a = Applier::new(
        &staging,
        ApplyOptions {
            owners,
            ..Default::default()
        },
    )
    .unwrap();
    for l in image_layers() {
        let gz = gzip(&l);
        let (p, d) = blob(&blobs, &gz, GZIP);
        a.apply_layer(&p, &d).unwrap();
    }
    let tree = a.finish().unwrap();
    assert_eq!(
        tree.native_owners,
        owners == OwnerMode::Native || (owners == OwnerMode::Auto && is_root())
    );
    before_mkfs(&staging);
    let img = dir.join("rootfs.ext4");
    let info = build_rootfs(&tree, &img, "banger-root").unwrap();
    assert!(info.size_bytes > 0 && info.inodes >= 15, "{info:?}");
    img
}

fn check_image(img: &Path, with_xattrs: bool) {
    let st = |p: &str| debugfs_stat(img, p).unwrap_or_else(|| panic!("{p} missing from the image"));
    let root = st("/");
    assert_eq!(
        (root.mode, root.uid, root.gid),
        (0o755, 0, 0),
        "{}",
        root.raw
    );
    let sudo = st("/usr/bin/sudo");
    assert_eq!(
        (sudo.mode, sudo.uid, sudo.gid, sudo.links),
        (0o4755, 0, 0, 2),
        "{}",
        sudo.raw
    );
    let home = st("/home/dev");
    assert_eq!(
        (home.kind.as_str(), home.mode, home.uid, home.gid),
        ("directory", 0o750, 1000, 1000)
    );
    let prof = st("/home/dev/.profile");
    assert_eq!((prof.mode, prof.uid, prof.gid), (0o640, 1000, 1000));
    let odd = st("/home/dev/odd dir");
    assert_eq!(
        (odd.mode, odd.uid, odd.gid),
        (0o750, 1000, 1000),
        "{}",
        odd.raw
    );
    let odd = st("/home/dev/odd dir/it's \"quoted\" \\x2d");
    assert_eq!(
        (odd.mode, odd.uid, odd.gid),
        (0o640, 1000, 1001),
        "{}",
        odd.raw
    );
    let node = st("/dev/odd node");
    assert_eq!(
        (node.kind.as_str(), node.mode),
        ("character special", 0o600)
    );
    let shadow = st("/etc/shadow");
    assert_eq!((shadow.mode, shadow.uid, shadow.gid), (0o640, 0, 42));
    let root_home = st("/root");
    assert_eq!((root_home.mode, root_home.uid), (0o700, 0));
    assert_eq!(st("/root/.bashrc").mode, 0o600);
    let null = st("/dev/null");
    assert_eq!(
        (null.kind.as_str(), null.mode),
        ("character special", 0o666),
        "{}",
        null.raw
    );
    assert!(
        null.raw.contains("Device major/minor number: 01:03"),
        "{}",
        null.raw
    );
    let sda = st("/dev/sda");
    assert_eq!(
        (sda.kind.as_str(), sda.mode, sda.gid),
        ("block special", 0o660, 6),
        "{}",
        sda.raw
    );
    assert_eq!(st("/bin").kind, "symlink");
    assert!(debugfs_stat(img, "/etc/gone").is_none());
    // Every inode in the image is root's unless the layers said otherwise.
    let ls = debugfs_cmd(img, "ls -l /usr/bin");
    assert!(
        ls.lines()
            .filter(|l| l.contains("sudo") || l.contains("ping"))
            .all(|l| l.split_whitespace().nth(3) == Some("0")),
        "{ls}"
    );
    if with_xattrs {
        let ea = debugfs_cmd(img, "ea_list /usr/bin/ping");
        assert!(ea.contains("security.capability"), "{ea}");
    }
}

#[test]
fn native_owners_to_ext4() {
    if !have_e2fsprogs() {
        eprintln!("skipping: e2fsprogs not installed");
        return;
    }
    if !is_root() {
        eprintln!("skipping: native owners need root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = build(t.path(), OwnerMode::Native, |_| {});
    check_image(&img, true);
}

#[test]
fn recorded_owners_to_ext4() {
    if !have_e2fsprogs() {
        eprintln!("skipping: e2fsprogs not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = build(t.path(), OwnerMode::Record, |staging| {
        if is_root() {
            // What an unprivileged builder's tree looks like: everything its own.
            let st = std::process::Command::new("chown")
                .args(["-R", "-h", "4242:4242"])
                .arg(staging)
                .status()
                .unwrap();
            assert!(st.success());
        }
    });
    check_image(&img, true);
}

/// The real unprivileged path: when run as root, this test re-runs itself as
/// `nobody` (setpriv) to apply and build, then checks the image as root.
#[test]
fn unprivileged_build_end_to_end() {
    const NAME: &str = "unprivileged_build_end_to_end";
    if !have_e2fsprogs() {
        eprintln!("skipping: e2fsprogs not installed");
        return;
    }
    if let Ok(dir) = std::env::var("BANGER_OCI_TEST_CHILD_DIR") {
        assert!(!is_root());
        build(Path::new(&dir), OwnerMode::Auto, |_| {});
        return;
    }
    let t = tempfile::tempdir().unwrap();
    if !is_root() {
        let img = build(t.path(), OwnerMode::Auto, |_| {});
        check_image(&img, true);
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("BANGER_OCI_TEST_CHILD_DIR", t.path())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: cannot run setpriv to drop privileges: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "unprivileged child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let img = t.path().join("rootfs.ext4");
    // The tree really was unprivileged: files there belong to nobody.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::symlink_metadata(t.path().join("staging/usr/bin/sudo"))
            .unwrap()
            .uid(),
        65534
    );
    assert!(!t.path().join("staging/dev/null").exists());
    check_image(&img, true);
}
