//! Decompression and header bombs: a few KiB of compressed tar that would make the
//! applier allocate gigabytes (GNU long names, PAX headers), write gigabytes of
//! zeros (GNU sparse entries) or keep quadratic bookkeeping (very deep paths). Each
//! is refused early, through layers and plain streams alike (an export guest's tar
//! goes through the same code).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_image::oci::{Applier, ApplyError, ApplyOptions, Limits, Whiteouts};
use bombs_support::{header, peak_rss, sparse, BLOCK};
use std::io::Write;

mod bombs_support;

/// zstd stream of: an extension header of `kind` announcing `size` bytes, then
/// `size` zero bytes (streamed, never held in memory), padding, a regular file and
/// the end blocks.
fn extension_bomb(kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    z.write_all(header(kind, "././@LongLink", size).as_bytes())
        .unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size.next_multiple_of(BLOCK as u64);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        z.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    z.write_all(header(tar::EntryType::Regular, "f", 0).as_bytes())
        .unwrap();
    z.write_all(&[0u8; 2 * BLOCK]).unwrap();
    z.finish().unwrap()
}

fn apply(bytes: Vec<u8>, limits: Limits) -> (Result<(), ApplyError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        limits,
        ..Default::default()
    };
    let r = Applier::new(dir.path(), opts).and_then(|mut a| {
        a.apply_stream("bomb", std::io::Cursor::new(bytes), Whiteouts::Interpret)?;
        a.finish().map(|_| ())
    });
    (r, dir)
}

#[test]
fn a_half_gigabyte_long_name_or_pax_header_is_refused_unread() {
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
        tar::EntryType::XGlobalHeader,
    ] {
        let bomb = extension_bomb(kind, 512 << 20);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let before = peak_rss();
        let (r, _dir) = apply(bomb, Limits::default());
        let grew = peak_rss().saturating_sub(before);
        assert!(
            matches!(&r, Err(ApplyError::HostileHeader { .. })),
            "{kind:?}: {r:?}"
        );
        assert!(
            grew < 128 << 20,
            "{kind:?}: peak memory grew by {grew} bytes"
        );
    }
}

#[test]
fn headers_of_real_size_still_work() {
    // A 300-byte name through a GNU long name, and a PAX path: both fine.
    let long = format!("dir/{}/{}", "n".repeat(200), "m".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let (r, dir) = apply(bytes, Limits::default());
    r.unwrap();
    assert_eq!(std::fs::read(dir.path().join(&long)).unwrap(), b"hi");
}

#[test]
fn gnu_sparse_entries_are_refused() {
    // 64 MiB of holes in 2 KiB of tar, with a 1 MiB unpacked cap: expanding the
    // holes would write 64 times the cap.
    let limits = Limits {
        max_uncompressed: 1 << 20,
        ..Limits::default()
    };
    let (r, dir) = apply(sparse(64 << 20), limits);
    assert!(
        matches!(&r, Err(ApplyError::HostileHeader { what, .. }) if what.contains("sparse")),
        "{r:?}"
    );
    let written = std::fs::metadata(dir.path().join("sparse")).map_or(0, |m| m.len());
    assert_eq!(written, 0, "the sparse file was written");
}

fn one_file(path: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn very_long_or_deep_paths_are_refused() {
    let deep = vec!["d"; 300].join("/");
    let (r, _d) = apply(one_file(&deep), Limits::default());
    assert!(
        matches!(&r, Err(ApplyError::PathTooLong { what, .. }) if what.contains("deep")),
        "{r:?}"
    );
    let long = vec!["n".repeat(200); 25].join("/");
    let (r, _d) = apply(one_file(&long), Limits::default());
    assert!(
        matches!(&r, Err(ApplyError::PathTooLong { what, .. }) if what.contains("bytes")),
        "{r:?}"
    );
    // 200 levels is fine.
    let ok = vec!["d"; 200].join("/");
    let (r, _d) = apply(one_file(&ok), Limits::default());
    r.unwrap();
}

#[test]
fn implicit_parent_directories_count_as_entries() {
    // One entry, 50 implicit parents, a cap of 10 entries.
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let path = vec!["d"; 51].join("/");
    let (r, _d) = apply(one_file(&path), limits);
    assert!(
        matches!(&r, Err(ApplyError::TooManyEntries { .. })),
        "{r:?}"
    );
}

#[test]
fn paths_and_xattrs_count_against_the_metadata_cap() {
    // 100 entries of 2 KiB paths: 200 KiB of paths, over a 64 KiB cap.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..100 {
        let path = format!("{i:03}/{}", vec!["a".repeat(200); 10].join("/"));
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &path, &b""[..]).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let limits = Limits {
        max_metadata_bytes: 64 << 10,
        ..Limits::default()
    };
    let (r, _d) = apply(bytes.clone(), limits);
    assert!(
        matches!(&r, Err(ApplyError::TooMuchMetadata { .. })),
        "{r:?}"
    );
    let (r, _d) = apply(bytes, Limits::default());
    r.unwrap();
}
