//! Layer application: changesets (whiteouts, opaque directories), metadata (modes
//! with setuid, owners, times, xattrs), links and special files, every compression.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::oci::{AppliedTree, Applier, ApplyOptions, OwnerMode};
use oci_support::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use tar::EntryType;

fn apply(site: &Site, layers: &[(Vec<u8>, &str)], owners: OwnerMode) -> AppliedTree {
    let mut a = Applier::new(
        &site.staging(),
        ApplyOptions {
            owners,
            ..Default::default()
        },
    )
    .unwrap();
    for (bytes, mt) in layers {
        let (p, d) = blob(&site.blobs(), bytes, mt);
        let stats = a.apply_layer(&p, &d).unwrap();
        assert_eq!(stats.compressed_bytes, bytes.len() as u64);
    }
    a.finish().unwrap()
}

fn lmd(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The image used by several tests: two layers exercising the changeset rules.
fn two_layers() -> Vec<Vec<u8>> {
    let l1 = Layer::new()
        .dir("./", ROOT)
        .dir("etc/", ROOT)
        .file("etc/keep", m(0o644, 0, 0), b"keep")
        .file("etc/gone", m(0o644, 0, 0), b"gone")
        .dir("etc/gonedir", ROOT)
        .file("etc/gonedir/f", ROOT, b"x")
        .dir("opt", ROOT)
        .dir("opt/old", ROOT)
        .file("opt/old/f", ROOT, b"old")
        .file("opt/oldfile", ROOT, b"old")
        .dir("usr/bin", ROOT) // parent usr/ is implicit
        .file("usr/bin/sudo", m(0o4755, 0, 0), b"#!suid")
        .file("usr/bin/wall", m(0o2755, 0, 5), b"#!sgid")
        .dir("tmp", m(0o1777, 0, 0))
        .dir("home/dev", m(0o750, 1000, 1000))
        .file("home/dev/.profile", m(0o644, 1000, 1000), b"PS1=x")
        .symlink("bin", "usr/bin")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .finish();
    let l2 = Layer::new()
        .whiteout("etc/.wh.gone")
        .whiteout("etc/.wh.gonedir")
        .dir("opt", ROOT)
        .whiteout("opt/.wh..wh..opq")
        .file("opt/new", ROOT, b"new")
        .hardlink("usr/bin/sudoedit", "usr/bin/sudo")
        .file("etc/keep", m(0o600, 0, 0), b"replaced")
        // Same-layer content survives a whiteout of the same name.
        .file("etc/same", ROOT, b"same")
        .whiteout("etc/.wh.same")
        .finish();
    vec![l1, l2]
}

#[test]
fn changesets_links_and_modes() {
    if !is_root() {
        eprintln!("skipping: needs root to chown (the record mode is tested in oci_rootfs)");
        return;
    }
    for (compress, mt) in [
        (
            std::convert::identity::<Vec<u8>> as fn(Vec<u8>) -> Vec<u8>,
            TAR,
        ),
        (|b: Vec<u8>| gzip(&b), GZIP),
        (|b: Vec<u8>| zstd(&b), ZSTD),
    ] {
        let site = Site::new();
        let layers: Vec<(Vec<u8>, &str)> = two_layers()
            .into_iter()
            .map(|l| (compress(l), mt))
            .collect();
        let tree = apply(&site, &layers, OwnerMode::Native);
        assert!(tree.native_owners);
        assert_eq!(tree.fixups.len(), 1, "only the root directory is recorded");
        let st = site.staging();
        assert!(
            !st.join("etc/gone").exists() && !st.join("etc/gonedir").exists(),
            "{mt}"
        );
        assert_eq!(std::fs::read(st.join("etc/keep")).unwrap(), b"replaced");
        assert_eq!(lmd(&st.join("etc/keep")).mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(st.join("etc/same")).unwrap(), b"same");
        // Opaque: lower content of opt/ is gone, this layer's stays.
        let opt: Vec<_> = std::fs::read_dir(st.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(opt, ["new"], "{mt}");
        // setuid, setgid, sticky; owners.
        assert_eq!(lmd(&st.join("usr/bin/sudo")).mode() & 0o7777, 0o4755);
        let wall = lmd(&st.join("usr/bin/wall"));
        assert_eq!((wall.mode() & 0o7777, wall.gid()), (0o2755, 5));
        assert_eq!(lmd(&st.join("tmp")).mode() & 0o7777, 0o1777);
        let home = lmd(&st.join("home/dev"));
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o7777),
            (1000, 1000, 0o750)
        );
        assert_eq!(lmd(&st.join("home/dev/.profile")).uid(), 1000);
        // Implicit parents: 0755 root.
        let usr = lmd(&st.join("usr"));
        assert_eq!((usr.uid(), usr.mode() & 0o7777), (0, 0o755));
        // Hardlink shares the inode.
        assert_eq!(
            lmd(&st.join("usr/bin/sudoedit")).ino(),
            lmd(&st.join("usr/bin/sudo")).ino()
        );
        assert_eq!(lmd(&st.join("usr/bin/sudo")).nlink(), 2);
        // Symlinks are stored verbatim, dangling absolute targets included.
        assert_eq!(
            std::fs::read_link(st.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            std::fs::read_link(st.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        // Times, directories included (set after their children).
        assert_eq!(lmd(&st.join("home/dev/.profile")).mtime(), 1_600_000_000);
        assert_eq!(lmd(&st.join("etc")).mtime(), 1_600_000_000);
        assert_eq!(lmd(&st).mtime(), 1_600_000_000);
        // The staging root stays private on the host; the image's root mode is recorded.
        assert_eq!(lmd(&st).mode() & 0o7777, 0o700);
        assert_eq!(tree.fixups.get("").unwrap().mode, 0o040755);
    }
}

#[test]
fn directories_replace_and_are_replaced() {
    let site = Site::new();
    let l1 = Layer::new()
        .dir("a", ROOT)
        .file("a/f", ROOT, b"x")
        .file("b", ROOT, b"file")
        .finish();
    // A file replaces the directory a; a directory replaces the file b; a directory
    // entry for an existing directory keeps its content and takes the new mode.
    let l2 = Layer::new()
        .file("a", ROOT, b"now a file")
        .dir("b", ROOT)
        .file("b/c", ROOT, b"c")
        .finish();
    let l3 = Layer::new().dir("b", m(0o700, 0, 0)).finish();
    let tree = apply(&site, &[(l1, TAR), (l2, TAR), (l3, TAR)], OwnerMode::Auto);
    let st = tree.root;
    assert_eq!(std::fs::read(st.join("a")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(st.join("b/c")).unwrap(), b"c");
    assert_eq!(lmd(&st.join("b")).mode() & 0o777, 0o700);
}

#[test]
fn special_files() {
    let site = Site::new();
    let l = Layer::new()
        .dir("dev", ROOT)
        .device("dev/null", EntryType::Char, 1, 3, m(0o666, 0, 0))
        .device("dev/loop0", EntryType::Block, 7, 0, m(0o660, 0, 6))
        .device("run/initctl", EntryType::Fifo, 0, 0, m(0o600, 0, 0))
        .finish();
    let tree = apply(&site, &[(l, TAR)], OwnerMode::Auto);
    let st = site.staging();
    assert!(lmd(&st.join("run/initctl")).file_type().is_fifo());
    if !is_root() {
        eprintln!("skipping device node checks: not root (they are recorded instead)");
        assert!(tree.fixups.get("dev/null").unwrap().device.is_some());
        return;
    }
    let null = lmd(&st.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (rustix::fs::makedev(1, 3), 0o666)
    );
    let lp = lmd(&st.join("dev/loop0"));
    assert!(lp.file_type().is_block_device());
    assert_eq!(
        (lp.rdev(), lp.gid(), lp.mode() & 0o7777),
        (rustix::fs::makedev(7, 0), 6, 0o660)
    );
}

#[test]
fn record_mode_keeps_the_host_tree_ours_and_records_the_rest() {
    let site = Site::new();
    let layers: Vec<(Vec<u8>, &str)> = two_layers().into_iter().map(|l| (l, TAR)).collect();
    let mut layers = layers;
    layers.push((
        Layer::new()
            .dir("dev", ROOT)
            .device("dev/null", EntryType::Char, 1, 3, m(0o666, 0, 0))
            .dir("locked", m(0o000, 0, 0))
            .file("locked/secret", m(0o000, 0, 0), b"s")
            .finish(),
        TAR,
    ));
    let tree = apply(&site, &layers, OwnerMode::Record);
    assert!(!tree.native_owners);
    let st = site.staging();
    let me = rustix::process::geteuid().as_raw();
    // Host files stay ours, readable by us; the records say what the image wants.
    assert_eq!(lmd(&st.join("home/dev")).uid(), me);
    let f = tree.fixups.get("home/dev").unwrap();
    assert_eq!((f.uid, f.gid, f.mode), (1000, 1000, 0o040750));
    assert_eq!(tree.fixups.get("usr/bin/wall").unwrap().gid, 5);
    // Setuid survives on the host (we own the file); root-owned 0755 needs no record.
    assert_eq!(lmd(&st.join("usr/bin/sudo")).mode() & 0o7777, 0o4755);
    // Unreadable in the image, readable on the host (mkfs.ext4 -d must read it).
    assert_eq!(lmd(&st.join("locked")).mode() & 0o700, 0o700);
    assert_eq!(lmd(&st.join("locked/secret")).mode() & 0o600, 0o600);
    assert_eq!(tree.fixups.get("locked/secret").unwrap().mode, 0o100000);
    // Devices exist only as records.
    assert!(!st.join("dev/null").exists());
    let null = tree.fixups.get("dev/null").unwrap();
    assert_eq!(
        null.device.map(|d| (d.block, d.major, d.minor)),
        Some((false, 1, 3))
    );
    // Whiteouts and opaque directories dropped the records of what they removed.
    assert!(tree
        .fixups
        .iter()
        .all(|(k, _)| !k.starts_with("opt/old") && k != "etc/gone"));
}

#[test]
fn records_follow_removals() {
    // A recorded device node replaced by a file, and a recorded directory removed by
    // an opaque marker one level up, leave no stale records behind.
    let site = Site::new();
    let l1 = Layer::new()
        .device("n", EntryType::Char, 1, 3, m(0o666, 0, 0))
        .dir("d/sub", m(0o755, 7, 7))
        .device("d/sub/dev", EntryType::Char, 1, 5, m(0o666, 0, 0))
        .finish();
    let l2 = Layer::new()
        .file("n", ROOT, b"x")
        .dir("d", ROOT)
        .whiteout("d/.wh..wh..opq")
        .finish();
    let tree = apply(&site, &[(l1, TAR), (l2, TAR)], OwnerMode::Record);
    let keys: Vec<&String> = tree.fixups.iter().map(|(k, _)| k).collect();
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("d/") && k.as_str() != "n"),
        "{keys:?}"
    );
}

#[test]
fn xattrs() {
    let site = Site::new();
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let l = Layer::new()
        .file_with_pax(
            "ping",
            m(0o755, 0, 0),
            b"elf",
            &[
                ("SCHILY.xattr.user.banger", b"yes"),
                ("SCHILY.xattr.security.capability", &cap),
            ],
        )
        .finish();
    let tree = apply(&site, &[(l, TAR)], OwnerMode::Record);
    let f = tree.fixups.get("ping").expect("xattrs are recorded");
    assert_eq!(f.xattrs.len(), 2);
    if !is_root() {
        eprintln!("skipping native xattr check: not root");
        return;
    }
    let site = Site::new();
    let l = Layer::new()
        .file_with_pax(
            "f",
            m(0o644, 0, 0),
            b"x",
            &[("SCHILY.xattr.user.banger", b"yes")],
        )
        .finish();
    apply(&site, &[(l, TAR)], OwnerMode::Native);
    let mut buf = [0u8; 16];
    match rustix::fs::getxattr(site.staging().join("f"), "user.banger", &mut buf) {
        Ok(n) => assert_eq!(&buf[..n], b"yes"),
        Err(rustix::io::Errno::NOTSUP) => {
            eprintln!("skipping: the temp filesystem has no user xattrs")
        }
        Err(e) => panic!("{e}"),
    }
}
