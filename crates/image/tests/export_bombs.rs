//! Header and sparse bombs written by an export guest (`image promote`, `image
//! register` of an ext4 file): the guest's root user chooses every byte of the export
//! tar, so the bombs the layer applier refuses (`oci_bombs.rs`) must be refused on
//! this path too, before anything is allocated or written.
//!
//! The export disk is sparse, so a guest can announce a gigabyte-sized PAX header
//! followed by a gigabyte of zeros that costs it nothing to write.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_image::export::{apply_export, create_export_disk, ExportError, HEADER_BYTES};
use banger_image::oci::{ApplyError, ApplyOptions, Limits};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

mod bombs_support;
use bombs_support::{header, peak_rss, sparse, BLOCK};

const MIB: u64 = 1 << 20;

/// An export disk of `disk_size` (sparse) whose guest wrote `head` at the tar's
/// start and claims a tar of `tar_len` bytes (the rest: the disk's zeros).
fn export_disk(dir: &Path, disk_size: u64, head: &[u8], tar_len: u64) -> PathBuf {
    let disk = dir.join("export.disk");
    create_export_disk(&disk, disk_size).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(head, HEADER_BYTES).unwrap();
    f.write_all_at(&tar_len.to_le_bytes(), 64).unwrap();
    f.write_all_at(b"OK\n", 512).unwrap();
    disk
}

fn apply(disk: &Path, limits: Limits) -> (Result<(), ExportError>, tempfile::TempDir) {
    let staging = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        limits,
        ..Default::default()
    };
    let r = apply_export(disk, staging.path(), opts).map(|_| ());
    (r, staging)
}

#[test]
fn a_gigabyte_pax_header_or_long_name_from_a_guest_is_refused_unread() {
    for kind in [tar::EntryType::XHeader, tar::EntryType::GNULongName] {
        let d = tempfile::tempdir().unwrap();
        let claimed = 1 << 30;
        let head = header(kind, "././@LongLink", claimed);
        let tar_len = BLOCK as u64 + claimed + 3 * BLOCK as u64;
        let disk = export_disk(
            d.path(),
            HEADER_BYTES + tar_len + MIB,
            head.as_bytes(),
            tar_len,
        );
        let before = peak_rss();
        let (r, staging) = apply(&disk, Limits::default());
        let grew = peak_rss().saturating_sub(before);
        eprintln!("{kind:?}: {r:?}; peak RSS grew by {} KiB", grew >> 10);
        assert!(
            matches!(
                &r,
                Err(ExportError::Apply(ApplyError::HostileHeader { .. }))
            ),
            "{kind:?}: {r:?}"
        );
        assert!(grew < 64 * MIB, "{kind:?} header read into memory");
        drop(staging);
    }
}

#[test]
fn a_sparse_entry_from_a_guest_is_refused_before_writing_holes() {
    let d = tempfile::tempdir().unwrap();
    let tar = sparse(64 * MIB);
    let disk = export_disk(d.path(), 4 * MIB, &tar, tar.len() as u64);
    let limits = Limits {
        max_uncompressed: MIB,
        ..Limits::default()
    };
    let (r, staging) = apply(&disk, limits);
    assert!(
        matches!(&r, Err(ExportError::Apply(ApplyError::HostileHeader { what, .. })) if what.contains("sparse")),
        "{r:?}"
    );
    let written = std::fs::metadata(staging.path().join("sparse")).map_or(0, |m| m.len());
    assert_eq!(written, 0, "the sparse file was expanded");
}

#[test]
fn a_path_deeper_than_the_cap_from_a_guest_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, vec!["d"; 300].join("/"), &b"x"[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let disk = export_disk(d.path(), 4 * MIB, &tar, tar.len() as u64);
    let (r, _staging) = apply(&disk, Limits::default());
    assert!(
        matches!(&r, Err(ExportError::Apply(ApplyError::PathTooLong { what, .. })) if what.contains("deep")),
        "{r:?}"
    );
}
