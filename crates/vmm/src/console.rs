//! The guest's serial console log: written by the VMM, fed by the guest, so its size
//! is the guest's choice unless someone caps it.
//!
//! The log lives in the VM's runtime directory, which is tmpfs (memory) when banger
//! runs as root, so a guest printing in a loop would fill the host's memory. Both
//! backends open it for appending (QEMU's `file` chardev with `append=on`,
//! Firecracker's stdout with `O_APPEND`); that is what makes [`rotate`] safe while
//! the VMM keeps writing: after the file is truncated, the VMM's next write lands at
//! the new end instead of leaving a hole at its old offset.
//!
//! [`rotate`] keeps the newest [`ROTATE_AT`] bytes as `console.log.1` and empties
//! `console.log`; the daemon calls it every few seconds for each VM, so a VM's
//! console costs at most twice [`ROTATE_AT`] plus what the guest prints between two
//! checks. Readers only ever read a bounded tail ([`tail`]).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Size at which `console.log` is rotated.
pub const ROTATE_AT: u64 = 4 << 20;

/// The previous console log, kept by [`rotate`].
pub fn previous(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    log.with_file_name(name)
}

/// Open `path` for reading without following a symlink (the runtime directory is
/// ours, but a guest-controlled name never ends up there; this is belt and braces).
pub(crate) fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The last `max` bytes of the file at `path` (empty if it is missing).
pub(crate) fn file_tail(path: &Path, max: u64) -> Vec<u8> {
    let Ok(mut f) = open_nofollow(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    buf
}

/// The last `max` bytes of the console: the end of `console.log.1` followed by
/// `console.log`, so a tail read right after a rotation still shows the lines
/// before it. Never reads more than `max` bytes of either file.
pub fn tail(log: &Path, max: u64) -> Vec<u8> {
    let current = file_tail(log, max);
    let missing = max.saturating_sub(current.len() as u64);
    if missing == 0 {
        return current;
    }
    let mut out = file_tail(&previous(log), missing);
    out.extend_from_slice(&current);
    out
}

/// If `log` is larger than `at` bytes, keep its last `at` bytes as `console.log.1`
/// (replacing the older one) and truncate it to zero. Returns whether it rotated.
/// Bytes the VMM writes between the copy and the truncation are lost; that is the
/// price of not stopping the guest.
pub fn rotate(log: &Path, at: u64) -> std::io::Result<bool> {
    let len = match std::fs::symlink_metadata(log) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= at {
        return Ok(false);
    }
    let kept = file_tail(log, at);
    let prev = previous(log);
    replace_file(&prev, &prev.with_extension("1.tmp"), &kept)?;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(log)?;
    f.set_len(0)?;
    crate::console_marks::reset(log, now_secs())?;
    Ok(true)
}

/// Replace `path` with `data` (mode 0600) through `tmp`, never writing through a
/// symlink: what a reader sees is the old file or the new one, never a torn one.
pub(crate) fn replace_file(path: &Path, tmp: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)?;
    f.write_all(data)?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// Create (or empty) the console log at `path` and open it for appending, the way
/// a VMM writing to it must (see the module docs).
pub fn create_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(previous(path));
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_len(0)?;
    crate::console_marks::reset(path, now_secs())?;
    Ok(f)
}

/// Now, in unix seconds (the marks' clock).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_log_keeps_its_newest_bytes_and_the_writer_appends_at_the_new_end() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let mut w = create_for_append(&log).unwrap();
        let old: Vec<u8> = (0..10_000u32)
            .flat_map(|i| format!("{i:05}\n").into_bytes())
            .collect();
        w.write_all(&old).unwrap();
        assert!(!rotate(&log, 100_000).unwrap(), "under the cap: untouched");
        assert!(rotate(&log, 600).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let prev = std::fs::read(previous(&log)).unwrap();
        assert_eq!(prev, old[old.len() - 600..]);
        // The writer keeps its descriptor: its next bytes start the file, no hole.
        w.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"after\n");
        // The tail spans the rotation.
        let t = tail(&log, 12);
        assert_eq!(t, b"09999\nafter\n");
        assert_eq!(tail(&log, 4), b"ter\n");
        assert!(tail(&d.path().join("none"), 10).is_empty());
    }

    #[test]
    fn a_symlinked_log_is_neither_read_nor_rotated_through() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, vec![b'x'; 2000]).unwrap();
        let log = d.path().join("console.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(!rotate(&log, 100).unwrap());
        assert!(tail(&log, 100).is_empty());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), 2000);
    }
}
