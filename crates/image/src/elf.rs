//! Just enough ELF reading to tell whether a binary can run without a dynamic loader.
//! The guest agent is also the initrd's init, where no libc exists: a dynamically
//! linked build would boot to a kernel panic, so we refuse it up front.

/// Why a binary was judged unusable as the guest agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not a 64-bit little-endian x86-64 ELF file.
    #[error("not an x86-64 ELF executable")]
    NotElf,
    /// Truncated or inconsistent headers.
    #[error("ELF headers are truncated or inconsistent")]
    Truncated,
}

const PT_INTERP: u32 = 3;

// Offsets come from the file: `o + n` must not overflow (found by fuzzing).
fn range(o: usize, n: usize) -> Result<std::ops::Range<usize>, ElfError> {
    Ok(o..o.checked_add(n).ok_or(ElfError::Truncated)?)
}
fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    b.get(range(o, 2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ElfError::Truncated)
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    b.get(range(o, 4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(ElfError::Truncated)
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    let s = b.get(range(o, 8)?).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// True when the ELF image in `bytes` has no program interpreter (static or static-pie).
pub fn is_static(bytes: &[u8]) -> Result<bool, ElfError> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(ElfError::NotElf);
    }
    if u16_at(bytes, 0x12)? != 62 {
        return Err(ElfError::NotElf);
    }
    let phoff = usize::try_from(u64_at(bytes, 0x20)?).map_err(|_| ElfError::Truncated)?;
    let phentsize = usize::from(u16_at(bytes, 0x36)?);
    let phnum = usize::from(u16_at(bytes, 0x38)?);
    if phentsize < 4 {
        return Err(ElfError::Truncated);
    }
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|d| phoff.checked_add(d))
            .ok_or(ElfError::Truncated)?;
        if u32_at(bytes, at)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries_are_dynamic() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert_eq!(is_static(&ls), Ok(false));
    }

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

    #[test]
    fn garbage_is_refused() {
        assert_eq!(is_static(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        let mut fake = vec![0u8; 64];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[5] = 1;
        fake[0x12] = 62;
        fake[0x20] = 0xff; // program headers far past the end
        fake[0x36] = 56;
        fake[0x38] = 1;
        assert_eq!(is_static(&fake), Err(ElfError::Truncated));
    }
}
