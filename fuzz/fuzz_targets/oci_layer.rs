//! The OCI layer applier on a fresh temporary directory: tar (plain, gzip or zstd
//! by magic) with whiteouts interpreted, small caps so a run stays fast.
#![no_main]

use banger_image::oci::{Applier, ApplyOptions, Limits, OwnerMode, Whiteouts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let staging = dir.path().join("staging");
    if std::fs::create_dir(&staging).is_err() {
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
    let Ok(mut a) = Applier::new(&staging, opts) else { return };
    let reader = std::io::Cursor::new(data.to_vec());
    if a.apply_stream("fuzz", reader, Whiteouts::Interpret).is_ok() {
        let _ = a.finish();
    }
    // Nothing may escape the staging directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(names, [std::ffi::OsString::from("staging")]);
});
