//! Hostile tar pieces shared by the layer tests (`oci_bombs.rs`) and the export
//! tests (`export_bombs.rs`): the same bombs must be refused on both paths.
#![allow(dead_code, clippy::unwrap_used)]

/// A tar block.
pub const BLOCK: usize = 512;

/// A GNU header block.
pub fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A GNU sparse entry: one 512-byte data block at the start of a file of
/// `real_size` bytes (the rest a hole).
pub fn sparse(real_size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(BLOCK as u64);
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(0);
        gnu.sparse[0].set_length(BLOCK as u64);
        // GNU tar ends a trailing hole with an empty block at the real size.
        gnu.sparse[1].set_offset(real_size);
        gnu.sparse[1].set_length(0);
        gnu.set_real_size(real_size);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend([b'x'; BLOCK]);
    out.extend([0u8; 2 * BLOCK]);
    out
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
