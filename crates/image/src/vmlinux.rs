//! The ELF `vmlinux` inside an x86 bzImage, for Firecracker.
//!
//! Firecracker loads only an uncompressed ELF kernel (it has no bzImage loader and no
//! real-mode setup code), while distributions ship bzImages (`/boot/vmlinuz-*`). A
//! bzImage is the real-mode setup sectors followed by a small decompressor whose payload
//! is the compressed vmlinux. The boot protocol (Documentation/arch/x86/boot.rst)
//! tells exactly where that payload is: `setup_sects` at 0x1f1 gives the size of the
//! setup part, and since protocol 2.08 `payload_offset`/`payload_length` at 0x248/0x24c
//! locate the payload inside the protected-mode part. We read those fields rather than
//! scan for compression magics (as the kernel's `scripts/extract-vmlinux` does), so a
//! magic-looking byte sequence inside the decompressor can never be mistaken for it.
//!
//! The kernel build appends the uncompressed size as a little-endian u32 to every
//! payload (`size_append` in `scripts/Makefile.lib`; for gzip it is the gzip trailer's
//! own ISIZE). We check the decompressed length against it: it catches truncation
//! that a streaming decoder would otherwise report as a clean end of stream.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Offset of `setup_sects` (number of 512-byte setup sectors after the boot sector).
const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` boot protocol magic.
const HEADER_MAGIC: usize = 0x202;
/// Offset of the boot protocol version.
const PROTOCOL_VERSION: usize = 0x206;
/// Offset of `payload_offset` (relative to the protected-mode part).
const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length`.
const PAYLOAD_LENGTH: usize = 0x24c;
/// First protocol version that has `payload_offset`/`payload_length`.
const MIN_PROTOCOL: u16 = 0x0208;
/// Legacy lz4 frame magic (`lz4 -l`, the format the kernel build uses).
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of every block of a legacy lz4 frame except the last.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// Refuse to produce more than this: no real kernel is near it, and a corrupted size
/// field must not make us allocate gigabytes.
pub const MAX_VMLINUX: usize = 1 << 30;

/// How the payload of a bzImage is compressed (from its leading magic bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`CONFIG_KERNEL_GZIP`).
    Gzip,
    /// xz, usually with the x86 BCJ filter (`CONFIG_KERNEL_XZ`).
    Xz,
    /// zstd (`CONFIG_KERNEL_ZSTD`).
    Zstd,
    /// lz4 legacy frames (`CONFIG_KERNEL_LZ4`, Debian's choice).
    Lz4,
    /// lzma "alone" format (`CONFIG_KERNEL_LZMA`).
    Lzma,
    /// bzip2 (`CONFIG_KERNEL_BZIP2`): recognised, not decompressed.
    Bzip2,
    /// LZO (`CONFIG_KERNEL_LZO`): recognised, not decompressed.
    Lzo,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
        })
    }
}

impl Compression {
    /// Recognise a compressed stream by its first bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        let starts = |m: &[u8]| data.starts_with(m);
        if starts(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Some(Compression::Lz4)
        } else if starts(&[0x5d, 0x00, 0x00]) {
            Some(Compression::Lzma)
        } else if starts(b"BZh") {
            Some(Compression::Bzip2)
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Some(Compression::Lzo)
        } else {
            None
        }
    }
}

/// Why no vmlinux could be had from a kernel file.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// Reading the kernel or writing the extracted vmlinux failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no x86 boot protocol header.
    #[error("not an x86 bzImage (no \"HdrS\" setup header at 0x202): pass the distribution's /boot/vmlinuz-* or an ELF vmlinux")]
    NotBzImage,
    /// The boot protocol predates `payload_offset` (kernels before 2.6.30).
    #[error("bzImage boot protocol {major}.{minor:02} is older than 2.08 and does not locate its payload: use a newer kernel or an ELF vmlinux")]
    ProtocolTooOld {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The header points past the end of the file.
    #[error("bzImage is truncated: {what} needs {need} bytes but the file has {have}; the kernel file is incomplete, fetch or copy it again")]
    Truncated {
        /// The part that does not fit.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The payload starts with no known compression magic.
    #[error("the bzImage payload starts with {magic:02x?}, which is no known compression format: the kernel file is corrupted")]
    UnknownCompression {
        /// The payload's first bytes.
        magic: Vec<u8>,
    },
    /// The payload uses a compression banger does not decompress.
    #[error("the kernel payload is {0}-compressed, which banger cannot decompress: use a kernel built with gzip, xz, zstd or lz4, or an ELF vmlinux")]
    Unsupported(Compression),
    /// The decoder rejected the payload.
    #[error("decompressing the {compression} kernel payload failed: {reason}; the kernel file is corrupted, fetch or copy it again")]
    Decompress {
        /// Payload compression.
        compression: Compression,
        /// The decoder's message.
        reason: String,
    },
    /// The decompressed size differs from the size the kernel build recorded.
    #[error("the {compression} kernel payload decompressed to {got} bytes but the bzImage records {expected}: the kernel file is corrupted, fetch or copy it again")]
    SizeMismatch {
        /// Payload compression.
        compression: Compression,
        /// Size recorded after the payload.
        expected: usize,
        /// Size produced.
        got: usize,
    },
    /// The result is not something Firecracker can boot.
    #[error("the extracted kernel is not an x86-64 ELF executable: {0}")]
    NotElf(&'static str),
}

/// Where the compressed vmlinux sits inside a bzImage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The compressed bytes (including the trailing size word).
    pub data: &'a [u8],
    /// Offset of `data` in the bzImage file.
    pub file_offset: usize,
    /// Detected compression.
    pub compression: Compression,
}

// Offsets come from the file: `o + n` must not overflow (found by fuzzing).
fn le16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn le64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Locate the compressed payload through the setup header.
pub fn payload(bzimage: &[u8]) -> Result<Payload<'_>, VmlinuxError> {
    if bzimage.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS".as_slice()) {
        return Err(VmlinuxError::NotBzImage);
    }
    let version = le16(bzimage, PROTOCOL_VERSION).ok_or(VmlinuxError::NotBzImage)?;
    if version < MIN_PROTOCOL {
        let [minor, major] = version.to_le_bytes();
        return Err(VmlinuxError::ProtocolTooOld { major, minor });
    }
    // setup_sects == 0 means 4 (boot.rst: "for backwards compatibility").
    let sects = match bzimage[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (sects + 1) * 512;
    let (Some(off), Some(len)) = (le32(bzimage, PAYLOAD_OFFSET), le32(bzimage, PAYLOAD_LENGTH))
    else {
        return Err(VmlinuxError::Truncated {
            what: "the setup header",
            need: PAYLOAD_LENGTH + 4,
            have: bzimage.len(),
        });
    };
    let start = pm_start.saturating_add(off as usize);
    let end = start.saturating_add(len as usize);
    let data = bzimage.get(start..end).ok_or(VmlinuxError::Truncated {
        what: "the compressed payload",
        need: end,
        have: bzimage.len(),
    })?;
    // Every payload ends with a 4-byte size: shorter than that is no payload at all.
    if data.len() < 8 {
        return Err(VmlinuxError::Truncated {
            what: "the compressed payload",
            need: 8,
            have: data.len(),
        });
    }
    let compression =
        Compression::detect(data).ok_or_else(|| VmlinuxError::UnknownCompression {
            magic: data[..data.len().min(6)].to_vec(),
        })?;
    Ok(Payload {
        data,
        file_offset: start,
        compression,
    })
}

/// Extract the ELF vmlinux from a bzImage held in memory.
///
/// The result is exactly the decompressed payload (as `scripts/extract-vmlinux` gives
/// it): the stripped vmlinux, followed on relocatable kernels by the relocation table,
/// which Firecracker's ELF loader ignores because no program header covers it.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let p = payload(bzimage)?;
    let out = decompress(p.compression, p.data)?;
    elf_info(&out)?;
    Ok(out)
}

/// Decompress a kernel payload (`data` includes the trailing size word).
pub fn decompress(compression: Compression, data: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    if matches!(compression, Compression::Bzip2 | Compression::Lzo) {
        return Err(VmlinuxError::Unsupported(compression));
    }
    let split = data.len().saturating_sub(4);
    let expected = le32(data, split).unwrap_or(0) as usize;
    if expected > MAX_VMLINUX {
        return Err(VmlinuxError::Decompress {
            compression,
            reason: format!("recorded size {expected} exceeds the {MAX_VMLINUX}-byte limit"),
        });
    }
    let fail = |reason: String| VmlinuxError::Decompress {
        compression,
        reason,
    };
    let body = &data[..split];
    let mut out = Vec::with_capacity(expected);
    // Read one byte past the limit so an oversized stream is noticed, not cut.
    let limit = MAX_VMLINUX as u64 + 1;
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| {
        r.take(limit)
            .read_to_end(out)
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    };
    match compression {
        // gzip's own trailer is the size word: the decoder needs all of it.
        Compression::Gzip => read(&mut flate2::read::GzDecoder::new(data), &mut out)?,
        Compression::Xz => read(&mut liblzma::read::XzDecoder::new(body), &mut out)?,
        Compression::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| fail(e.to_string()))?;
            read(
                &mut liblzma::read::XzDecoder::new_stream(body, stream),
                &mut out,
            )?
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(body).map_err(|e| fail(e.to_string()))?;
            // `zstd -22 --ultra` (the kernel's setting) may exceed the default window limit.
            d.window_log_max(31).map_err(|e| fail(e.to_string()))?;
            read(&mut d.single_frame(), &mut out)?
        }
        Compression::Lz4 => lz4_legacy(body, &mut out).map_err(fail)?,
        Compression::Bzip2 | Compression::Lzo => {
            return Err(VmlinuxError::Unsupported(compression))
        }
    }
    if out.len() > MAX_VMLINUX {
        return Err(fail(format!("output exceeds the {MAX_VMLINUX}-byte limit")));
    }
    // gzip records the size modulo 2^32; every other format records it exactly.
    if out.len() as u32 as usize != expected {
        return Err(VmlinuxError::SizeMismatch {
            compression,
            expected,
            got: out.len(),
        });
    }
    Ok(out)
}

/// Decode lz4 legacy frames: magic, then `[u32 LE compressed size][block]`, every block
/// independent and at most 8 MiB uncompressed.
///
/// lz4_flex's frame decoder reads legacy frames too, but it takes a truncated size word
/// for a clean end of stream and has no notion of the kernel's concatenation rule
/// (a block size equal to the magic starts a new frame, as in `lib/decompress_unlz4.c`);
/// this loop over its block decoder reports exactly which block is broken.
fn lz4_legacy(mut data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut block = 0usize;
    while !data.is_empty() {
        let Some(word) = le32(data, 0) else {
            return Err(format!(
                "{} stray bytes after block {block} (truncated block header)",
                data.len()
            ));
        };
        data = &data[4..];
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = word as usize;
        let Some(compressed) = data.get(..size) else {
            return Err(format!(
                "block {block} claims {size} compressed bytes but only {} remain",
                data.len()
            ));
        };
        if out.len() > MAX_VMLINUX {
            return Err(format!("output exceeds the {MAX_VMLINUX}-byte limit"));
        }
        let at = out.len();
        out.resize(at + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(compressed, &mut out[at..])
            .map_err(|e| format!("block {block}: {e}"))?;
        out.truncate(at + n);
        data = &data[size..];
        block += 1;
    }
    Ok(())
}

/// The parts of an ELF kernel that decide how it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// Entry point (`e_entry`).
    pub entry: u64,
    /// Every program header, in file order.
    pub program_headers: Vec<ProgramHeader>,
}

/// One ELF64 program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `p_type` (1 = PT_LOAD, 4 = PT_NOTE).
    pub kind: u32,
    /// `p_flags`.
    pub flags: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr` (where Firecracker loads the segment).
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;

/// Check that `bytes` is an x86-64 ELF executable with loadable segments inside the file
/// (what Firecracker's loader requires) and return its entry point and program headers.
pub fn elf_info(bytes: &[u8]) -> Result<ElfInfo, VmlinuxError> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(VmlinuxError::NotElf("no ELF magic"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(VmlinuxError::NotElf("not 64-bit little-endian"));
    }
    if le16(bytes, 0x10) != Some(2) {
        return Err(VmlinuxError::NotElf("not an executable (ET_EXEC)"));
    }
    if le16(bytes, 0x12) != Some(62) {
        return Err(VmlinuxError::NotElf("not built for x86-64"));
    }
    let entry = le64(bytes, 0x18).ok_or(VmlinuxError::NotElf("headers are truncated"))?;
    let phoff = le64(bytes, 0x20).ok_or(VmlinuxError::NotElf("headers are truncated"))?;
    let phentsize = usize::from(le16(bytes, 0x36).unwrap_or(0));
    let phnum = usize::from(le16(bytes, 0x38).unwrap_or(0));
    if phentsize < 56 {
        return Err(VmlinuxError::NotElf(
            "program header size is below 56 bytes",
        ));
    }
    let phoff =
        usize::try_from(phoff).map_err(|_| VmlinuxError::NotElf("headers are truncated"))?;
    let mut program_headers = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        let ph = (|| {
            let at = |k: usize| o.checked_add(k);
            Some(ProgramHeader {
                kind: le32(bytes, o)?,
                flags: le32(bytes, at(4)?)?,
                offset: le64(bytes, at(8)?)?,
                vaddr: le64(bytes, at(16)?)?,
                paddr: le64(bytes, at(24)?)?,
                filesz: le64(bytes, at(32)?)?,
                memsz: le64(bytes, at(40)?)?,
                align: le64(bytes, at(48)?)?,
            })
        })()
        .ok_or(VmlinuxError::NotElf(
            "program headers lie past the end of the file",
        ))?;
        if ph.kind == PT_LOAD && ph.offset.saturating_add(ph.filesz) > bytes.len() as u64 {
            return Err(VmlinuxError::NotElf(
                "a loadable segment lies past the end of the file",
            ));
        }
        program_headers.push(ph);
    }
    if !program_headers.iter().any(|p| p.kind == PT_LOAD) {
        return Err(VmlinuxError::NotElf("no loadable segment"));
    }
    Ok(ElfInfo {
        entry,
        program_headers,
    })
}

/// Whether `bytes` starts like an ELF file (a kernel that needs no extraction).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Where [`vmlinux_path`] caches the vmlinux of `kernel`: next to it, `vmlinuz*`
/// renamed to `vmlinux*` (the images' `vmlinuz` becomes `vmlinux`), anything else with
/// `.vmlinux` appended.
pub fn cache_path(kernel: &Path) -> PathBuf {
    let name = kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cached = match name.strip_prefix("vmlinuz") {
        Some(rest) => format!("vmlinux{rest}"),
        None => format!("{name}.vmlinux"),
    };
    kernel.with_file_name(cached)
}

/// An ELF kernel Firecracker can boot for `kernel`, extracting it once.
///
/// An ELF kernel is returned as is. For a bzImage the vmlinux is written next to it
/// ([`cache_path`]) on first use and reused while it is at least as new as the kernel;
/// it is written to a temporary name and renamed, so a crash mid-way never leaves a
/// half-written vmlinux that a later call would trust.
pub fn vmlinux_path(kernel: &Path) -> Result<PathBuf, VmlinuxError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| VmlinuxError::Io { what, path, source }
    };
    let bytes = std::fs::read(kernel).map_err(io("read kernel", kernel))?;
    if is_elf(&bytes) {
        elf_info(&bytes)?;
        return Ok(kernel.to_path_buf());
    }
    let target = cache_path(kernel);
    if is_fresh(&target, kernel) {
        return Ok(target);
    }
    let t = std::time::Instant::now();
    let vmlinux = extract(&bytes)?;
    // Unique per process and call: two VMs starting at once may extract the same
    // kernel concurrently; each writes its own temporary file and the renames are atomic.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = target.with_file_name(format!(
        ".{}.tmp-{}-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // Data on disk before the name points at it: a crash must never leave a
    // `vmlinux` that `is_fresh` trusts but that is empty or torn.
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&vmlinux)?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("write vmlinux", &tmp)(e)
    })?;
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("rename vmlinux into place at", &target)(e)
    })?;
    tracing::info!(
        kernel = %kernel.display(),
        vmlinux = %target.display(),
        bytes = vmlinux.len(),
        ms = t.elapsed().as_millis() as u64,
        "extracted vmlinux"
    );
    Ok(target)
}

/// The cached vmlinux exists, is an ELF file, and is not older than the kernel.
fn is_fresh(cached: &Path, kernel: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(c), Some(k)) = (mtime(cached), mtime(kernel)) else {
        return false;
    };
    let mut head = [0u8; 4];
    let elf = std::fs::File::open(cached)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && is_elf(&head);
    elf && c >= k
}
