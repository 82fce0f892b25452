//! The bzImage and ELF header parsers: kernel format and release, ELF program
//! headers (vmlinux), static-binary check (guest agent).
#![no_main]

use banger_image::{elf, kernel, vmlinux};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kernel::format(data);
    if let Some(release) = kernel::release(data) {
        assert!(!release.is_empty() && !release.contains('/'));
    }
    let _ = vmlinux::elf_info(data);
    let _ = vmlinux::is_elf(data);
    let _ = elf::is_static(data);
});
