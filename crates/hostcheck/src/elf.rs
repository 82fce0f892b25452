//! Just enough ELF reading to tell whether a binary can run without a dynamic loader.
//!
//! The guest agent is also the initrd's init, where no libc exists: a dynamically
//! linked build boots to a kernel panic, so banger refuses it up front. The bytes come
//! from a file anyone may have put there, so every offset is computed with checked
//! arithmetic and every read is bounds-checked.

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
const EM_X86_64: u16 = 62;

fn field<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], ElfError> {
    let end = at.checked_add(N).ok_or(ElfError::Truncated)?;
    let s = b.get(at..end).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}
fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    field(b, at).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    field(b, at).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    field(b, at).map(u64::from_le_bytes)
}

/// True when the ELF image in `bytes` is an x86-64 executable without a program
/// interpreter (`PT_INTERP`), i.e. static or static-pie.
pub fn is_static(bytes: &[u8]) -> Result<bool, ElfError> {
    // 64-bit (class 2), little-endian (data 1), x86-64.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(ElfError::NotElf);
    }
    if u16_at(bytes, 0x12).map_err(|_| ElfError::NotElf)? != EM_X86_64 {
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
            .and_then(|o| o.checked_add(phoff))
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

    /// A minimal x86-64 ELF header with `phnum` program headers of type `ptype` at 64.
    fn elf(ptype: u32, phnum: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 * usize::from(phnum)];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        for i in 0..usize::from(phnum) {
            let at = 64 + 56 * i;
            b[at..at + 4].copy_from_slice(&ptype.to_le_bytes());
        }
        b
    }

    #[test]
    fn static_and_dynamic_headers() {
        assert_eq!(is_static(&elf(1, 3)), Ok(true));
        assert_eq!(is_static(&elf(PT_INTERP, 2)), Ok(false));
        assert_eq!(is_static(&elf(1, 0)), Ok(true));
    }

    #[test]
    fn host_binaries_are_dynamic() {
        match std::fs::read("/bin/ls") {
            Ok(ls) => assert_eq!(is_static(&ls), Ok(false), "/bin/ls is dynamic"),
            Err(e) => eprintln!("skipping the /bin/ls check: {e}"),
        }
    }

    #[test]
    fn garbage_and_hostile_headers_are_refused() {
        assert_eq!(is_static(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        assert_eq!(is_static(b"\x7fELF\x02\x01"), Err(ElfError::NotElf));
        let mut arm = elf(1, 1);
        arm[0x12] = 183;
        assert_eq!(is_static(&arm), Err(ElfError::NotElf));
        // Program headers far past the end.
        let mut far = elf(1, 1);
        far[0x20..0x28].copy_from_slice(&0xffu64.to_le_bytes());
        assert_eq!(is_static(&far), Err(ElfError::Truncated));
        // Offsets chosen to overflow usize arithmetic: must not panic or wrap.
        let mut wrap = elf(1, 2);
        wrap[0x20..0x28].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert_eq!(is_static(&wrap), Err(ElfError::Truncated));
        let mut tiny = elf(1, 1);
        tiny[0x36..0x38].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(is_static(&tiny), Err(ElfError::Truncated));
        assert_eq!(is_static(&elf(1, 1)[..66]), Err(ElfError::Truncated));
    }
}
