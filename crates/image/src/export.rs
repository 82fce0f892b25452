//! Turning a VM's disks (written by the guest, so untrusted) into a tree on the host,
//! without the host ever mounting or parsing them.
//!
//! A crafted ext4 image is an attack surface of the host kernel, and tools that walk
//! one from userspace (`debugfs rdump`) follow its names into host paths. So banger
//! boots its own kernel and initrd on the disks with [`KERNEL_ARG`] on the command
//! line, in a throw-away VM without network: the initrd's init (`banger-agent`, see
//! `crates/agent/src/export.rs`) mounts them read-only, lets the *guest* kernel merge
//! the overlay (whiteouts, opaque directories), and writes the merged tree as one tar
//! onto a raw *export disk*. The host then only reads that tar, through the same
//! hostile-content-proof applier as OCI layers ([`crate::oci::Applier::apply_stream`]),
//! and the tree it produces feeds [`crate::oci::build_rootfs`].
//!
//! The caller attaches, in this order of preference: the base `rootfs.ext4`
//! read-only, the VM's overlay disk and work disk writable (mounting ext4 read-only
//! still replays a dirty journal, which needs a writable device; the export guest
//! never writes to them otherwise), and the export disk writable. A disk is a file
//! for every VMM (Firecracker has no virtio-serial), hence a disk and not a stream.
//!
//! Export disk layout ([`create_export_disk`] writes the magic, the guest the rest):
//!
//! | offset | what |
//! |---|---|
//! | 0 | [`MAGIC`] |
//! | 64 | tar length, little-endian u64 |
//! | 512 | status: `OK\n`, or `ERR <message>\n` (at most 3 KiB), written last |
//! | 4096 ([`HEADER_BYTES`]) | the tar stream |
//!
//! What the tar does not carry: extended attributes (file capabilities such as
//! `ping`'s `cap_net_raw`, ACLs, SELinux labels), sockets, and each filesystem's
//! `lost+found`. Sparse files become full files.

use crate::oci::{AppliedTree, Applier, ApplyError, ApplyOptions, Whiteouts};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The first bytes of an export disk; the export guest finds its disk by them.
pub use banger_contract::export::MAGIC;
/// Size of the export disk's header; the tar starts here.
pub const HEADER_BYTES: u64 = 4096;
/// What to append to the kernel command line of an export boot.
pub const KERNEL_ARG: &str = banger_contract::cmdline::MODE_EXPORT_ARG;
const LEN_OFFSET: u64 = 64;
const STATUS_OFFSET: usize = 512;
/// The smallest valid tar: its two zero end blocks.
const MIN_TAR: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// What the export guest reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportResult {
    /// Length of the tar stream that starts at [`HEADER_BYTES`].
    pub tar_len: u64,
}

/// Why an export disk could not be made, read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file operation on the export disk or the staging directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The requested export disk size cannot even hold the header and an empty tar.
    #[error("an export disk of {size} bytes is too small (at least {min} bytes); size it with export::size_for")]
    TooSmall {
        /// The requested size.
        size: u64,
        /// The smallest usable size.
        min: u64,
    },
    /// The file does not start with [`MAGIC`] (not an export disk, or overwritten).
    #[error("{path} is not a banger export disk (its header is missing or was overwritten); create a fresh one with export::create_export_disk, and see the export guest's console log")]
    NotAnExportDisk {
        /// The file.
        path: PathBuf,
    },
    /// The header is intact but the guest never wrote a status.
    #[error("the export guest did not finish (no status on {path}): see its console log")]
    Unfinished {
        /// The export disk.
        path: PathBuf,
    },
    /// The guest reported a failure (`ERR <message>`).
    #[error("the export guest failed: {message}")]
    GuestFailed {
        /// The guest's message, with control characters replaced.
        message: String,
    },
    /// The status is neither `OK` nor `ERR ...`.
    #[error(
        "the export guest left an unreadable status {status:?} on {path}: see its console log"
    )]
    BadStatus {
        /// The export disk.
        path: PathBuf,
        /// The status line, with control characters replaced.
        status: String,
    },
    /// The tar length the guest reported does not fit the disk (or is too short).
    #[error("the export guest reported a tar of {tar_len} bytes, but a valid one on this disk is between 1024 and {max} bytes; the export is broken: see the export guest's console log")]
    BadLength {
        /// What the guest wrote at offset 64.
        tar_len: u64,
        /// The disk's size minus its header.
        max: u64,
    },
    /// The exported tar was refused or could not be written into the staging tree.
    #[error("applying the exported tree: {0}")]
    Apply(#[from] ApplyError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { what, path, source }
}

/// What a human may see of guest-written text: no control characters (no terminal
/// escapes from a hostile guest), at most `max` characters.
fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Create (or replace) the export disk at `path`: a sparse file of `size_bytes`
/// (rounded up to 4 KiB) holding [`MAGIC`]. Symlinks at `path` are refused.
pub fn create_export_disk(path: &Path, size_bytes: u64) -> Result<(), ExportError> {
    let min = HEADER_BYTES + MIN_TAR;
    if size_bytes < min {
        return Err(ExportError::TooSmall {
            size: size_bytes,
            min,
        });
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(io_err("create export disk", path))?;
    f.set_len(size_bytes.div_ceil(4096) * 4096)
        .map_err(io_err("size export disk", path))?;
    f.write_all_at(MAGIC, 0)
        .map_err(io_err("write export disk header", path))?;
    Ok(())
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn open_disk(path: &Path) -> Result<(File, u64), ExportError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(io_err("open export disk", path))?;
    let md = f.metadata().map_err(io_err("stat export disk", path))?;
    if !md.is_file() {
        return Err(ExportError::NotAnExportDisk { path: path.into() });
    }
    Ok((f, md.len()))
}

/// Read what the export guest reported: `OK` with a tar length that fits the disk,
/// or the reason it did not.
pub fn read_result(path: &Path) -> Result<ExportResult, ExportError> {
    let (f, size) = open_disk(path)?;
    read_header(&f, size, path)
}

fn read_header(f: &File, size: u64, path: &Path) -> Result<ExportResult, ExportError> {
    let not_ours = || ExportError::NotAnExportDisk { path: path.into() };
    if size < HEADER_BYTES {
        return Err(not_ours());
    }
    let mut head = vec![0u8; HEADER_BYTES as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(io_err("read export disk header", path))?;
    if !head.starts_with(MAGIC) {
        return Err(not_ours());
    }
    let status = &head[STATUS_OFFSET..];
    let end = status.iter().position(|b| *b == 0).unwrap_or(status.len());
    let status = &status[..end];
    if status.is_empty() {
        return Err(ExportError::Unfinished { path: path.into() });
    }
    let line = status.split(|b| *b == b'\n').next().unwrap_or_default();
    if line != b"OK" || status.len() == line.len() {
        if let Some(msg) = line.strip_prefix(b"ERR ") {
            return Err(ExportError::GuestFailed {
                message: printable(msg, 3 * 1024),
            });
        }
        return Err(ExportError::BadStatus {
            path: path.into(),
            status: printable(status, 200),
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[LEN_OFFSET as usize..LEN_OFFSET as usize + 8]);
    let tar_len = u64::from_le_bytes(len);
    let max = size - HEADER_BYTES;
    if !(MIN_TAR..=max).contains(&tar_len) {
        return Err(ExportError::BadLength { tar_len, max });
    }
    Ok(ExportResult { tar_len })
}

/// Check the export disk at `path` ([`read_result`]) and apply its tar into
/// `staging_root` (an existing, normally empty directory) with the hostile-content
/// checks and caps of `opts`. `.wh.*` names are ordinary files here: the guest
/// exported a merged tree. On error, discard `staging_root`: nothing outside it was
/// touched.
pub fn apply_export(
    path: &Path,
    staging_root: &Path,
    opts: ApplyOptions,
) -> Result<AppliedTree, ExportError> {
    let (mut f, size) = open_disk(path)?;
    let result = read_header(&f, size, path)?;
    f.seek(SeekFrom::Start(HEADER_BYTES))
        .map_err(io_err("read export disk", path))?;
    // apply_stream buffers the stream itself.
    let tar = f.take(result.tar_len);
    let mut applier = Applier::new(staging_root, opts)?;
    let stats = applier.apply_stream(
        &format!("export {}", path.display()),
        tar,
        Whiteouts::Literal,
    )?;
    tracing::debug!(
        entries = stats.entries,
        bytes = stats.uncompressed_bytes,
        "applied export"
    );
    Ok(applier.finish()?)
}

/// A safe export disk size for exporting `inputs` (the disk image files: base,
/// overlay, work). The merged tree never holds more file data than the filesystems
/// it comes from, and their apparent sizes bound that data (the overlay only hides
/// base files, it never adds data of its own). On top of the data, each tar entry
/// costs a 512-byte header (two or three with a long name or link target) and up to
/// 511 bytes of padding: one 512-byte block per 4 KiB of input covers one entry per
/// 4 KiB, four times mkfs.ext4's default of one inode per 16 KiB. 64 MiB of slack
/// covers small inputs, the header and the end blocks. The file is sparse, so
/// oversizing costs nothing; a tree that still does not fit (sparse files inside
/// the VM, an unusually dense filesystem) makes the guest fail with
/// "the export disk is full". Missing inputs count as empty.
pub fn size_for(inputs: &[&Path]) -> u64 {
    let data = inputs
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .fold(0u64, u64::saturating_add);
    let headers = data.div_ceil(4096).saturating_mul(512);
    HEADER_BYTES
        .saturating_add(data)
        .saturating_add(headers)
        .saturating_add(64 * MIB)
        .div_ceil(MIB)
        .saturating_mul(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_covers_data_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let f = File::create(&a).unwrap();
        f.set_len(1024 * MIB).unwrap();
        let s = size_for(&[&a, &dir.path().join("missing")]);
        assert!(s >= 1024 * MIB + 128 * MIB + 64 * MIB, "{s}");
        assert_eq!(s % MIB, 0);
        assert_eq!(size_for(&[]), 65 * MIB);
    }

    #[test]
    fn guest_text_is_made_printable() {
        assert_eq!(printable(b"a\x1b[2Jb\n", 100), "a?[2Jb?");
        assert_eq!(printable("é".repeat(10).as_bytes(), 3), "ééé");
    }
}
