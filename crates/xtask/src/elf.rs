//! Is an ELF file static? The agent is the initrd's PID 1, where no dynamic loader
//! exists: a release with a dynamic agent would boot no VM.

/// `true` when the 64-bit little-endian ELF `b` has no `PT_INTERP` program header.
pub fn is_static(b: &[u8]) -> Result<bool, String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    };
    let phoff = u64_at(0x20).ok_or("truncated header")? as usize;
    let phentsize = u16_at(0x36).ok_or("truncated header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated header")? as usize;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or("truncated program headers")?;
        if p_type == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_test_binary_is_dynamic_and_garbage_is_refused() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(super::is_static(&me), Ok(false));
        assert!(super::is_static(b"#!/bin/sh\n").is_err());
    }
}
