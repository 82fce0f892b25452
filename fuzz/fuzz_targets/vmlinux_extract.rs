//! vmlinux extraction from a bzImage: setup header, payload location, the
//! decompressors, and the ELF check of the result.
#![no_main]

use banger_image::vmlinux;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmlinux::payload(data);
    if let Ok(elf) = vmlinux::extract(data) {
        assert!(vmlinux::is_elf(&elf));
    }
    if let Some(c) = vmlinux::Compression::detect(data) {
        let _ = vmlinux::decompress(c, data);
    }
});
