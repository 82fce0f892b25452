//! The host half of `banger.mode=export`: the export disk's header, the guest's
//! status, and applying the exported tar (hostile names refused, `.wh.*` kept).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::export::{
    apply_export, create_export_disk, read_result, ExportError, ExportResult, HEADER_BYTES, MAGIC,
};
use banger_image::oci::{ApplyError, ApplyOptions, OwnerMode};
use oci_support::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

const MIB: u64 = 1024 * 1024;

/// Do what the export guest does: the tar at 4096, its length at 64, the status at 512.
fn guest_writes(disk: &Path, tar: &[u8], len: u64, status: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(tar, HEADER_BYTES).unwrap();
    f.write_all_at(&len.to_le_bytes(), 64).unwrap();
    f.write_all_at(status, 512).unwrap();
}

fn new_disk(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("export.disk");
    create_export_disk(&p, size).unwrap();
    p
}

#[test]
fn header_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 8 * MIB + 1);
    let md = std::fs::metadata(&disk).unwrap();
    assert_eq!(md.len(), 8 * MIB + 4096, "rounded up to 4 KiB");
    assert!(
        md.blocks() * 512 <= 64 * 1024,
        "sparse: {} blocks",
        md.blocks()
    );
    let head = std::fs::read(&disk).unwrap();
    assert_eq!(&head[..16], MAGIC);
    assert!(head[16..].iter().all(|b| *b == 0));

    let tar = Layer::new().dir("etc", ROOT).finish();
    guest_writes(&disk, &tar, tar.len() as u64, b"OK\n");
    assert_eq!(
        read_result(&disk).unwrap(),
        ExportResult {
            tar_len: tar.len() as u64
        }
    );

    // Creating it again over an old one starts afresh.
    create_export_disk(&disk, 8 * MIB).unwrap();
    assert!(matches!(
        read_result(&disk),
        Err(ExportError::Unfinished { .. })
    ));
    assert!(matches!(
        create_export_disk(&dir.path().join("tiny"), 4096),
        Err(ExportError::TooSmall { .. })
    ));
}

#[test]
fn guest_error_surfaces_its_message_without_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    guest_writes(
        &disk,
        b"",
        0,
        b"ERR export: mount /dev/vda: \x1b[31minvalid argument\n",
    );
    let e = read_result(&disk).unwrap_err();
    match &e {
        ExportError::GuestFailed { message } => {
            assert_eq!(message, "export: mount /dev/vda: ?[31minvalid argument")
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("the export guest failed"), "{e}");
    let staging = tempfile::tempdir().unwrap();
    assert!(matches!(
        apply_export(&disk, staging.path(), ApplyOptions::default()),
        Err(ExportError::GuestFailed { .. })
    ));
}

#[test]
fn missing_status_says_the_guest_did_not_finish() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    // A tar and a length, but the guest died before the status.
    let tar = Layer::new().dir("etc", ROOT).finish();
    guest_writes(&disk, &tar, tar.len() as u64, b"");
    let e = read_result(&disk).unwrap_err();
    assert!(matches!(e, ExportError::Unfinished { .. }), "{e:?}");
    assert!(e.to_string().contains("did not finish"), "{e}");
    assert!(e.to_string().contains("console log"), "{e}");

    guest_writes(&disk, b"", 0, b"garbage\n");
    assert!(matches!(
        read_result(&disk),
        Err(ExportError::BadStatus { .. })
    ));

    // The guest overwrote the magic (or this is not an export disk at all).
    guest_writes(&disk, b"", 0, b"OK\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(b"XXXX", 0)
        .unwrap();
    assert!(matches!(
        read_result(&disk),
        Err(ExportError::NotAnExportDisk { .. })
    ));
    let short = dir.path().join("short");
    std::fs::write(&short, MAGIC).unwrap();
    assert!(matches!(
        read_result(&short),
        Err(ExportError::NotAnExportDisk { .. })
    ));
}

#[test]
fn tar_length_beyond_the_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    let max = 4 * MIB - HEADER_BYTES;
    for bad in [max + 1, u64::MAX, 0, 1023] {
        guest_writes(&disk, b"", bad, b"OK\n");
        match read_result(&disk) {
            Err(ExportError::BadLength { tar_len, max: m }) => {
                assert_eq!((tar_len, m), (bad, max))
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    guest_writes(&disk, b"", max, b"OK\n");
    assert_eq!(read_result(&disk).unwrap().tar_len, max);
}

/// A merged tree as the guest would write it.
fn merged_tree() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("./", ROOT)
        .dir("etc", ROOT)
        .file("etc/hostname", m(0o644, 0, 0), b"dev\n")
        .dir("home", ROOT)
        .dir("home/me", m(0o750, 1000, 1000))
        .file("home/me/notes", m(0o600, 1000, 1000), b"notes\n")
        .symlink("home/me/link", "/etc/hostname")
        .hardlink("home/me/again", "home/me/notes")
        .file("home/me/.wh.keep", m(0o644, 1000, 1000), b"a real file\n")
        .file(
            "home/me/.wh..wh..opq",
            m(0o644, 1000, 1000),
            b"also a file\n",
        )
        .raw(
            EntryType::Regular,
            b"usr-bin-tool",
            None,
            m(0o4755, 0, 0),
            b"#!/bin/sh\n",
        );
    l.finish()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        owners: OwnerMode::Auto,
        ..Default::default()
    }
}

#[test]
fn applies_a_merged_tree_keeping_wh_names_as_files() {
    // Auto is native as root; Record is what an unprivileged daemon gets.
    for owners in [OwnerMode::Auto, OwnerMode::Record] {
        applies_merged_tree(ApplyOptions {
            owners,
            ..Default::default()
        });
    }
}

fn applies_merged_tree(opts: ApplyOptions) {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    let tar = merged_tree();
    guest_writes(&disk, &tar, tar.len() as u64, b"OK\n");
    let site = Site::new();
    let tree = apply_export(&disk, &site.staging(), opts).unwrap();
    let r = &tree.root;
    assert_eq!(std::fs::read(r.join("etc/hostname")).unwrap(), b"dev\n");
    assert_eq!(
        std::fs::read_link(r.join("home/me/link")).unwrap(),
        Path::new("/etc/hostname")
    );
    let a = std::fs::metadata(r.join("home/me/notes")).unwrap();
    let b = std::fs::metadata(r.join("home/me/again")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        std::fs::read(r.join("home/me/.wh.keep")).unwrap(),
        b"a real file\n"
    );
    assert_eq!(
        std::fs::read(r.join("home/me/.wh..wh..opq")).unwrap(),
        b"also a file\n"
    );
    // Nothing was hidden by them.
    assert!(r.join("home/me/notes").exists());
    let tool = std::fs::metadata(r.join("usr-bin-tool")).unwrap();
    if tree.native_owners {
        assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1000, 0o600));
        assert_eq!(tool.mode() & 0o7777, 0o4755);
    } else {
        let f = tree.fixups.get("home/me/notes").unwrap();
        assert_eq!((f.uid, f.gid, f.mode & 0o7777), (1000, 1000, 0o600));
        assert_eq!(
            tree.fixups.get("usr-bin-tool").unwrap().mode & 0o7777,
            0o4755
        );
    }
}

#[test]
fn a_dotdot_entry_is_refused_and_nothing_outside_changes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    let mut l = Layer::new();
    l.dir("./", ROOT)
        .file("etc-file", m(0o644, 0, 0), b"fine\n")
        .file("../escape/pwned", m(0o644, 0, 0), b"pwned\n")
        .file("later", m(0o644, 0, 0), b"never\n");
    let tar = l.finish();
    guest_writes(&disk, &tar, tar.len() as u64, b"OK\n");
    let site = Site::new();
    let before = site.snapshot();
    let e = apply_export(&disk, &site.staging(), opts()).unwrap_err();
    match &e {
        ExportError::Apply(ApplyError::DotDot { path, .. }) => {
            assert_eq!(path, "../escape/pwned")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(before, site.snapshot(), "the host tree outside changed");
    assert_eq!(std::fs::read_dir(site.escape()).unwrap().count(), 0);
    assert!(!site.staging().join("later").exists());
}

#[test]
fn a_tar_cut_short_by_its_length_is_refused() {
    // The guest's length is authoritative: bytes past it are never read, so a tar
    // whose length cuts an entry in half fails as corrupt instead of reading on.
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 4 * MIB);
    let mut l = Layer::new();
    l.dir("./", ROOT)
        .file("big", m(0o644, 0, 0), &vec![7u8; 100_000]);
    let tar = l.finish();
    guest_writes(&disk, &tar, 50_000, b"OK\n");
    let site = Site::new();
    let e = apply_export(&disk, &site.staging(), opts()).unwrap_err();
    assert!(
        matches!(e, ExportError::Apply(ApplyError::Corrupt { .. })),
        "{e:?}"
    );
}

/// `apply_stream` also takes a compressed tar from this host (`image register
/// --rootfs x.tar.zst`): the compression is read from the first bytes.
#[test]
fn a_stream_is_decompressed_by_its_magic() {
    use banger_image::oci::{Applier, Whiteouts};
    for (label, bytes) in [
        ("plain", merged_tree()),
        ("gzip", gzip(&merged_tree())),
        ("zstd", zstd(&merged_tree())),
    ] {
        let site = Site::new();
        let mut a = Applier::new(&site.staging(), opts()).unwrap();
        a.apply_stream(label, std::io::Cursor::new(bytes), Whiteouts::Literal)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let tree = a.finish().unwrap();
        assert_eq!(
            std::fs::read(tree.root.join("home/me/notes")).unwrap(),
            b"notes\n",
            "{label}"
        );
    }
}
