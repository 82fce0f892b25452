//! The static-ELF check of the guest agent lives in banger-hostcheck (one home for
//! the daemon, image builds and `banger doctor`); re-exported for this crate's users.

pub use banger_hostcheck::elf::{is_static, ElfError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_header_offsets_near_the_top_of_the_address_space_are_refused() {
        // Found by fuzzing: phoff close to usize::MAX made `phoff + 4` overflow.
        let mut b = vec![0u8; 128];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x10] = 2;
        b[0x12] = 62;
        b[0x20..0x28].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
        b[0x36] = 56;
        b[0x38] = 1;
        assert!(is_static(&b).is_err());
        assert!(crate::vmlinux::elf_info(&b).is_err());
        // The fuzzer's own input.
        let crash = include_bytes!("../tests/fuzz-regressions/kernel_headers-phoff-overflow");
        assert!(crate::vmlinux::elf_info(crash).is_err());
        let _ = is_static(crash);
    }
}
