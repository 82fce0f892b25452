//! A layer blob: its descriptor, its verification and its decompressed tar stream.
//!
//! A blob is verified in full (size and sha256 against its descriptor, under the
//! compressed cap) through the same open file before a single entry is applied, so a
//! tampered or truncated blob never touches the staging tree. The uncompressed stream
//! is then counted while it is read, so a decompression bomb stops at the cap.

use super::error::ApplyError;
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

/// An OCI content descriptor for a layer (the fields banger uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// `sha256:<hex>` of the blob as stored (compressed).
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// Size caps, checked while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed blob accepted.
    pub max_compressed: u64,
    /// Largest sum of compressed layer blobs downloaded for one image.
    pub max_total_compressed: u64,
    /// Largest uncompressed tar stream accepted for one layer.
    pub max_uncompressed: u64,
    /// Largest sum of uncompressed tar streams over all layers of an image.
    pub max_total_uncompressed: u64,
    /// Most tar entries over all layers. Bookkeeping is per path, so this bounds
    /// memory against a layer of millions of empty entries (a big development
    /// image has a few hundred thousand).
    pub max_entries: u64,
    /// Largest sum of entry path lengths (implicit parent directories included)
    /// and extended attribute sizes over all layers. The applier keeps per-path
    /// records, so this bounds its memory against long paths and big xattrs
    /// repeated over many entries (a big image has ~30 MiB of paths).
    pub max_metadata_bytes: u64,
}

impl Default for Limits {
    /// Generous for development images (a full toolchain image is a few GiB
    /// unpacked), small enough that a hostile image cannot fill a disk.
    fn default() -> Self {
        const GIB: u64 = 1024 * 1024 * 1024;
        Limits {
            max_compressed: 4 * GIB,
            max_total_compressed: 16 * GIB,
            max_uncompressed: 16 * GIB,
            max_total_uncompressed: 32 * GIB,
            max_entries: 2_000_000,
            max_metadata_bytes: 512 << 20,
        }
    }
}

/// Media types of tar layers (Docker's and OCI's, distributable or not).
const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// True when `media_type` is a layer banger can apply.
pub fn is_layer_media_type(media_type: &str) -> bool {
    LAYER_MEDIA_TYPES.contains(&media_type)
}

/// How a blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly multi-member).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// What the media type declares.
    pub fn from_media_type(media_type: &str) -> Compression {
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Compression::Gzip
        } else if media_type.ends_with("+zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// What the first bytes say. The magic wins over the media type, as in containerd:
    /// some tools label plain tar layers as gzip.
    pub fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Check `digest` is `sha256:<64 lowercase hex>` and return the hex part.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, ApplyError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(h)
        }
        _ => Err(ApplyError::BadDigest(digest.to_string())),
    }
}

/// Hash `file` from its start, reading at most `cap` bytes; returns (hex, size).
/// Errors with `CompressedTooLarge` past the cap.
pub(crate) fn hash_file(
    file: &mut File,
    cap: u64,
    layer: &str,
) -> Result<(String, u64), ApplyError> {
    let io = |source| ApplyError::Io {
        what: "read blob",
        path: layer.into(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > cap {
            return Err(ApplyError::CompressedTooLarge {
                layer: layer.into(),
                size: total,
                cap,
            });
        }
        h.update(&buf[..n]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, total))
}

/// Open `blob`, check its media type, size and digest against `desc` and the caps,
/// and return the file positioned at its start, ready to be applied.
pub(crate) fn open_verified(
    blob: &Path,
    desc: &LayerDescriptor,
    limits: &Limits,
) -> Result<File, ApplyError> {
    let layer = desc.digest.as_str();
    let expected = sha256_hex(layer)?;
    if !is_layer_media_type(&desc.media_type) {
        return Err(ApplyError::MediaType {
            layer: layer.into(),
            media_type: desc.media_type.clone(),
        });
    }
    if desc.size > limits.max_compressed {
        return Err(ApplyError::CompressedTooLarge {
            layer: layer.into(),
            size: desc.size,
            cap: limits.max_compressed,
        });
    }
    let mut file = File::open(blob).map_err(|source| ApplyError::Io {
        what: "open blob",
        path: blob.into(),
        source,
    })?;
    let (actual, size) = hash_file(&mut file, limits.max_compressed, layer)?;
    if size != desc.size {
        return Err(ApplyError::SizeMismatch {
            layer: layer.into(),
            expected: desc.size,
            actual: size,
        });
    }
    if actual != expected {
        return Err(ApplyError::DigestMismatch {
            layer: layer.into(),
            actual: format!("sha256:{actual}"),
        });
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|source| ApplyError::Io {
            what: "rewind blob",
            path: blob.into(),
            source,
        })?;
    Ok(file)
}

/// Counts bytes read and fails past a cap. The flag tells the caller, after the tar
/// reader has wrapped the error beyond recognition, that the cap was the cause.
pub(crate) struct Capped<R> {
    inner: R,
    read: u64,
    cap: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            self.hit.set(true);
            return Err(std::io::Error::other("layer exceeds the unpacked size cap"));
        }
        Ok(n)
    }
}

/// A decompressed, capped tar stream, the flag set when it hits its cap, and the
/// number of bytes read from it so far.
pub(crate) type TarStream = (Box<dyn Read>, Rc<Cell<bool>>, Rc<Cell<u64>>);

/// The decompressed tar stream of a verified blob, capped at `cap` bytes, plus the
/// flag set when the cap is hit and a counter readable after the stream is consumed.
pub(crate) fn tar_stream(
    file: File,
    desc: &LayerDescriptor,
    cap: u64,
) -> Result<TarStream, ApplyError> {
    let (inner, actual) = decompressed(file, &desc.digest)?;
    let declared = Compression::from_media_type(&desc.media_type);
    if actual != declared {
        tracing::debug!(layer = %desc.digest, ?declared, ?actual, "layer compression differs from its media type; using the magic bytes");
    }
    let (capped, hit, count) = capped(inner, cap);
    Ok((Box::new(capped), hit, count))
}

/// `reader` decompressed according to its first bytes (plain tar passes through).
/// `label` names the stream in errors.
pub(crate) fn decompressed<R: Read + 'static>(
    reader: R,
    label: &str,
) -> Result<(Box<dyn Read>, Compression), ApplyError> {
    let mut buf = BufReader::with_capacity(256 * 1024, reader);
    let head = buf.fill_buf().map_err(|source| ApplyError::Io {
        what: "read",
        path: label.into(),
        source,
    })?;
    let compression = Compression::from_magic(head);
    let inner: Box<dyn Read> = match compression {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(
            |source| ApplyError::Corrupt {
                layer: label.into(),
                source,
            },
        )?),
    };
    Ok((inner, compression))
}

/// A capped stream, its cap-hit flag and its byte counter (see [`capped`]).
pub(crate) type CappedStream<R> = (Counted<Capped<R>>, Rc<Cell<bool>>, Rc<Cell<u64>>);

/// `inner` capped at `cap` bytes, plus the flag set when the cap is hit and a counter
/// readable after the stream is consumed.
pub(crate) fn capped<R: Read>(inner: R, cap: u64) -> CappedStream<R> {
    let hit = Rc::new(Cell::new(false));
    let count = Rc::new(Cell::new(0));
    let capped = Counted {
        inner: Capped {
            inner,
            read: 0,
            cap,
            hit: hit.clone(),
        },
        count: count.clone(),
    };
    (capped, hit, count)
}

/// Publishes the number of bytes read so far (for stats after the tar reader is done).
pub(crate) struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression() {
        assert_eq!(Compression::from_magic(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::from_magic(b"usr/"), Compression::None);
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Zstd
        );
        assert!(!is_layer_media_type(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        ));
    }

    #[test]
    fn digests_are_checked_for_shape() {
        assert!(sha256_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha512:aa",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(
                matches!(sha256_hex(bad), Err(ApplyError::BadDigest(_))),
                "{bad}"
            );
        }
    }
}
