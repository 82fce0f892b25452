//! The export-disk reader and its tar applier (`.wh.*` names literal): the input
//! becomes the tar after a valid export header, or, when its first byte is odd, the
//! whole disk including the header.
#![no_main]

use banger_image::export::{apply_export, HEADER_BYTES, MAGIC};
use banger_image::oci::{ApplyOptions, Limits, OwnerMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let disk = dir.path().join("export.img");
    let staging = dir.path().join("staging");
    if std::fs::create_dir(&staging).is_err() {
        return;
    }
    let bytes = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => rest.to_vec(),
        _ => {
            let tar = data.get(1..).unwrap_or_default();
            let mut b = vec![0u8; HEADER_BYTES as usize];
            b[..MAGIC.len()].copy_from_slice(MAGIC);
            b[64..72].copy_from_slice(&(tar.len() as u64).to_le_bytes());
            b[512..515].copy_from_slice(b"OK\n");
            b.extend_from_slice(tar);
            b
        }
    };
    if std::fs::write(&disk, &bytes).is_err() {
        return;
    }
    let opts = ApplyOptions {
        limits: Limits {
            max_compressed: 1 << 20,
            max_total_compressed: 1 << 20,
            max_uncompressed: 8 << 20,
            max_total_uncompressed: 8 << 20,
            max_entries: 10_000,
            max_metadata_bytes: 4 << 20,
        },
        owners: OwnerMode::Record,
    };
    let _ = apply_export(&disk, &staging, opts);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(
        names,
        [
            std::ffi::OsString::from("export.img"),
            std::ffi::OsString::from("staging")
        ]
    );
});
