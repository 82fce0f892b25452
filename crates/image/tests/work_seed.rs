//! A hostile image's `/root` becomes a harmless work seed: a layer with a setuid-root
//! file, a setgid directory, device nodes, a named pipe, a `security.capability` and a
//! `trusted.*` xattr under `/root` (plus a socket left in the tree) yields a seed with
//! none of them, in the host tree (a root apply) and in the ownership record (an
//! unprivileged apply), and the list of what was dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod oci_support;

use banger_image::oci::{Applier, ApplyOptions, OwnerMode, Whiteouts};
use banger_image::seed::{sanitize_work_seed, DropKind, Dropped};
use oci_support::{is_root, m, Layer};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tar::EntryType;

/// `security.capability` granting cap_net_raw (VFS_CAP_REVISION_2, effective).
fn net_raw_capability() -> Vec<u8> {
    let mut v = vec![];
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

fn hostile_layer() -> Vec<u8> {
    let cap = net_raw_capability();
    Layer::new()
        .dir("root", m(0o40755, 0, 0))
        .file("root/.bashrc", m(0o100644, 0, 0), b"# hi\n")
        .file("root/su", m(0o104755, 0, 0), b"\x7fELF setuid root")
        .file("root/sg", m(0o102755, 0, 0), b"\x7fELF setgid")
        .dir("root/shared", m(0o42775, 0, 0))
        .device("root/shared/sda", EntryType::Block, 8, 0, m(0o60660, 0, 6))
        .device("root/mem", EntryType::Char, 1, 1, m(0o20640, 0, 15))
        .device("root/pipe", EntryType::Fifo, 0, 0, m(0o10644, 0, 0))
        .file_with_pax(
            "root/ping",
            m(0o100755, 0, 0),
            b"\x7fELF ping",
            &[
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.trusted.overlay", b"y"),
                ("SCHILY.xattr.user.keep", b"kept"),
            ],
        )
        // Outside /root: not the seed's business.
        .file("usr/bin/passwd", m(0o104755, 0, 0), b"\x7fELF passwd")
        .finish()
}

fn apply(staging: &Path, owners: OwnerMode) -> banger_image::oci::AppliedTree {
    let mut a = Applier::new(
        staging,
        ApplyOptions {
            owners,
            ..Default::default()
        },
    )
    .unwrap();
    a.apply_stream(
        "hostile",
        std::io::Cursor::new(hostile_layer()),
        Whiteouts::Interpret,
    )
    .unwrap();
    a.finish().unwrap()
}

fn kinds(dropped: &[Dropped]) -> Vec<(String, DropKind)> {
    dropped
        .iter()
        .map(|d| (d.path.clone(), d.what.clone()))
        .collect()
}

fn xattr_names(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap();
    buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn a_root_apply_leaves_no_setuid_device_socket_or_capability_in_the_seed() {
    if !is_root() {
        println!("skipping: a native apply (setuid owners, device nodes, security xattrs) needs root; the record test covers unprivileged applies");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tree = apply(t.path(), OwnerMode::Native);
    let seed = tree.root.join("root");
    // What the image put there really is on the host.
    assert_eq!(
        std::fs::metadata(seed.join("su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(std::fs::symlink_metadata(seed.join("mem"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(xattr_names(&seed.join("ping")).contains(&"security.capability".to_string()));
    // A socket someone left there, and a symlink to a setuid file elsewhere.
    let _sock = std::os::unix::net::UnixListener::bind(seed.join("agent.sock")).unwrap();
    std::os::unix::fs::symlink("../usr/bin/passwd", seed.join("passwd")).unwrap();

    let dropped = sanitize_work_seed(&seed, None).unwrap();
    for d in &dropped {
        println!("dropped {d}");
    }
    let k = kinds(&dropped);
    let want = [
        ("/root/agent.sock", DropKind::Socket),
        ("/root/mem", DropKind::Device),
        ("/root/ping", DropKind::Xattr("security.capability".into())),
        ("/root/ping", DropKind::Xattr("trusted.overlay".into())),
        ("/root/pipe", DropKind::Fifo),
        ("/root/sg", DropKind::Setgid),
        ("/root/shared", DropKind::Setgid),
        ("/root/shared/sda", DropKind::Device),
        ("/root/su", DropKind::Setuid),
    ];
    for (p, w) in want {
        assert!(
            k.contains(&(p.to_string(), w.clone())),
            "{p} {w:?} missing from {k:?}"
        );
    }
    assert_eq!(k.len(), 9, "{k:?}");

    // The seed now: plain files, a plain directory, nothing else.
    let md = |p: &str| std::fs::symlink_metadata(seed.join(p)).unwrap();
    assert_eq!(md("su").mode() & 0o7777, 0o755);
    assert_eq!(md("sg").mode() & 0o7777, 0o755);
    assert_eq!(md("shared").mode() & 0o7777, 0o775);
    for gone in ["mem", "pipe", "shared/sda", "agent.sock"] {
        assert!(
            std::fs::symlink_metadata(seed.join(gone)).is_err(),
            "{gone}"
        );
    }
    assert_eq!(xattr_names(&seed.join("ping")), ["user.keep"]);
    assert_eq!(std::fs::read(seed.join(".bashrc")).unwrap(), b"# hi\n");
    assert_eq!(md("").mode() & 0o7777, 0o700, "the seed itself is private");
    // The symlink was not followed: the file outside keeps its bit.
    assert!(md("passwd").file_type().is_symlink());
    assert_eq!(
        std::fs::metadata(tree.root.join("usr/bin/passwd"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    // Idempotent.
    assert!(sanitize_work_seed(&seed, None).unwrap().is_empty());
}

#[test]
fn an_unprivileged_apply_loses_them_from_its_ownership_record() {
    let t = tempfile::tempdir().unwrap();
    let mut tree = apply(t.path(), OwnerMode::Record);
    let seed = tree.root.join("root");
    let mut fx = tree.fixups.split_off("root");
    assert!(fx.get("mem").is_some_and(|f| f.device.is_some()));
    assert!(fx.get("su").is_some_and(|f| f.mode & 0o4000 != 0));
    assert!(fx
        .get("ping")
        .is_some_and(|f| f.xattrs.iter().any(|(n, _)| n == "security.capability")));

    let dropped = sanitize_work_seed(&seed, Some(&mut fx)).unwrap();
    let k = kinds(&dropped);
    for (p, w) in [
        ("/root/mem", DropKind::Device),
        ("/root/shared/sda", DropKind::Device),
        ("/root/pipe", DropKind::Fifo),
        ("/root/su", DropKind::Setuid),
        ("/root/sg", DropKind::Setgid),
        ("/root/shared", DropKind::Setgid),
        ("/root/ping", DropKind::Xattr("security.capability".into())),
        ("/root/ping", DropKind::Xattr("trusted.overlay".into())),
    ] {
        assert!(
            k.contains(&(p.to_string(), w.clone())),
            "{p} {w:?} missing from {k:?}"
        );
    }
    // The record the debugfs pass would replay holds none of it any more.
    for (key, f) in fx.iter() {
        assert!(f.device.is_none(), "{key}");
        assert_eq!(f.mode & 0o6000, 0, "{key}");
        assert!(
            f.xattrs.iter().all(|(n, _)| n.starts_with("user.")),
            "{key}: {:?}",
            f.xattrs
        );
    }
    assert!(fx.get("mem").is_none() && fx.get("pipe").is_none());
    assert_eq!(
        fx.get("ping").unwrap().xattrs,
        [("user.keep".to_string(), b"kept".to_vec())]
    );
    // And the host tree matches.
    for gone in ["pipe", "mem", "shared/sda"] {
        assert!(
            std::fs::symlink_metadata(seed.join(gone)).is_err(),
            "{gone}"
        );
    }
    for f in ["su", "sg"] {
        let mode = std::fs::metadata(seed.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o6000, 0, "{f}");
    }
}

#[test]
fn a_symlinked_seed_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("real")).unwrap();
    std::os::unix::fs::symlink(t.path().join("real"), t.path().join("seed")).unwrap();
    let e = sanitize_work_seed(&t.path().join("seed"), None).unwrap_err();
    assert!(e.to_string().contains("not a plain directory"), "{e}");
}
