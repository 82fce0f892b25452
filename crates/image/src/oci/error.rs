//! Why applying a layer failed. Every refusal names the layer and the entry, so a user
//! can tell a hostile or broken image from a bug in banger.

use std::path::PathBuf;

/// Why a layer could not be applied. Nothing is ever written outside the staging
/// directory, whatever the variant; the staging directory itself should be discarded.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry name has a `..` component.
    #[error("layer {layer}: entry {path:?} has a `..` component; the image is malformed or hostile, refusing it")]
    DotDot {
        /// Layer digest.
        layer: String,
        /// The raw entry name (lossy).
        path: String,
    },
    /// An entry name is absolute.
    #[error("layer {layer}: entry {path:?} is an absolute path; the image is malformed or hostile, refusing it")]
    Absolute {
        /// Layer digest.
        layer: String,
        /// The raw entry name (lossy).
        path: String,
    },
    /// A name is not UTF-8 or has whitespace, quotes, backslashes or control characters.
    #[error("layer {layer}: entry {path:?} has a name banger cannot write into an ext4 image (whitespace, quotes, backslash, control characters or non-UTF-8); rebuild the image without such file names")]
    Unencodable {
        /// Layer digest.
        layer: String,
        /// The raw entry name (lossy).
        path: String,
    },
    /// An entry's parent path goes through a symlink.
    #[error("layer {layer}: entry {path:?} lies under {ancestor:?}, which is a symlink; refusing to write through it")]
    SymlinkAncestor {
        /// Layer digest.
        layer: String,
        /// The entry.
        path: String,
        /// The ancestor that is a symlink.
        ancestor: String,
    },
    /// An entry's parent path goes through something that is not a directory.
    #[error("layer {layer}: entry {path:?} lies under {ancestor:?}, which is not a directory; the image is malformed")]
    NotADirectory {
        /// Layer digest.
        layer: String,
        /// The entry.
        path: String,
        /// The ancestor that is a file, device...
        ancestor: String,
    },
    /// A hardlink's target has `..` or is absolute.
    #[error(
        "layer {layer}: hardlink {path:?} points to {target:?}, outside the image; refusing it"
    )]
    HardlinkOutside {
        /// Layer digest.
        layer: String,
        /// The link.
        path: String,
        /// Its target (lossy).
        target: String,
    },
    /// A hardlink's target path goes through a symlink.
    #[error("layer {layer}: hardlink {path:?} points to {target:?} through the symlink {ancestor:?}; refusing it")]
    HardlinkThroughSymlink {
        /// Layer digest.
        layer: String,
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// The ancestor of the target that is a symlink.
        ancestor: String,
    },
    /// A hardlink's target is missing or is a directory.
    #[error(
        "layer {layer}: hardlink {path:?} points to {target:?}: {reason}; the image is malformed"
    )]
    HardlinkTarget {
        /// Layer digest.
        layer: String,
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// What is wrong with the target.
        reason: &'static str,
    },
    /// A whiteout names nothing valid (`.wh.`, `.wh..`).
    #[error("layer {layer}: whiteout {path:?} names no valid file; the image is malformed")]
    BadWhiteout {
        /// Layer digest.
        layer: String,
        /// The whiteout entry.
        path: String,
    },
    /// An entry has a type or field banger does not handle.
    #[error("layer {layer}: entry {path:?}: {reason}")]
    BadEntry {
        /// Layer digest.
        layer: String,
        /// The entry.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The compressed blob is larger than the configured cap.
    #[error("layer {layer} is {size} bytes compressed, over the cap of {cap}; raise the layer size limit if the image is trusted")]
    CompressedTooLarge {
        /// Layer digest.
        layer: String,
        /// Its size (or the size read so far).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The uncompressed stream exceeded the configured cap.
    #[error("layer {layer} unpacks to more than {cap} bytes (the cap); raise the unpacked size limit if the image is trusted")]
    UncompressedTooLarge {
        /// Layer digest.
        layer: String,
        /// The cap that was hit.
        cap: u64,
    },
    /// A tar header the guard refuses before parsing: an oversized GNU long name /
    /// long link / PAX header, or a GNU sparse entry (see `oci::guard`).
    #[error("layer {layer} contains {what}; the layer is refused (a hostile or unusual tar)")]
    HostileHeader {
        /// Layer digest (or stream label).
        layer: String,
        /// What was found.
        what: String,
    },
    /// An entry's path is longer or deeper than any real image needs.
    #[error("layer {layer}: entry {path:?} is {what}; the layer is refused")]
    PathTooLong {
        /// Layer digest (or stream label).
        layer: String,
        /// The path (shortened for the message).
        path: String,
        /// Which cap it broke.
        what: String,
    },
    /// The paths and extended attributes of all entries are larger than the cap.
    #[error("layer {layer} brings the image over {cap} bytes of paths and extended attributes (the cap); the image is hostile or unusual, raise the limit if it is trusted")]
    TooMuchMetadata {
        /// Layer digest (or stream label).
        layer: String,
        /// The cap.
        cap: u64,
    },
    /// The image has more entries than the configured cap.
    #[error("layer {layer} brings the image over {cap} entries (the cap); raise the entry limit if the image is trusted")]
    TooManyEntries {
        /// Layer digest.
        layer: String,
        /// The cap.
        cap: u64,
    },
    /// The blob's size differs from its descriptor.
    #[error("layer {layer}: blob is {actual} bytes but its descriptor says {expected}; the download is corrupt: delete it from the blob cache and pull again")]
    SizeMismatch {
        /// Layer digest.
        layer: String,
        /// Size from the descriptor.
        expected: u64,
        /// Size of the blob.
        actual: u64,
    },
    /// The blob's sha256 differs from its descriptor.
    #[error("layer {layer}: blob content hashes to {actual}; the download is corrupt or was tampered with: delete it from the blob cache and pull again")]
    DigestMismatch {
        /// Layer digest (expected).
        layer: String,
        /// The digest of what we read.
        actual: String,
    },
    /// The descriptor's digest is not `sha256:<64 hex>`.
    #[error("layer digest {0:?} is not a sha256 digest banger can verify")]
    BadDigest(String),
    /// The media type is not a layer type banger can apply.
    #[error("layer {layer}: media type {media_type:?} is not a tar layer banger can apply (encrypted or foreign layers are not supported)")]
    MediaType {
        /// Layer digest.
        layer: String,
        /// The media type.
        media_type: String,
    },
    /// The stream is not valid gzip/zstd/tar.
    #[error("layer {layer} is corrupt: {source}")]
    Corrupt {
        /// Layer digest.
        layer: String,
        /// What the decoder or tar reader said.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved (inside the staging directory, or a blob).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
