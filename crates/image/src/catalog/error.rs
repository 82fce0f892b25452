//! Why resolving or downloading from a catalog failed.
//!
//! Each message says what failed, where, and what the user can do about it: most
//! failures are either a broken catalog (ask its publisher), a lying server, or a
//! network problem (retry). Nothing is ever left half-downloaded in the cache.

use std::path::PathBuf;

/// Boxed source error for failures whose cause may be the network or the disk.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The index could not be read (network failure, missing file...).
    #[error("could not read the catalog index at {location}: {source}; check the catalog location and the network")]
    IndexFetch {
        /// Where the index was looked for.
        location: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The index is larger than any sane index (it is a list of names and hashes).
    #[error("the catalog index at {location} is larger than {cap} bytes; it is probably not a catalog index, check the location")]
    IndexTooLarge {
        /// Where the index was read from.
        location: String,
        /// The limit.
        cap: u64,
    },
    /// The index is not valid JSON or does not have the catalog's shape.
    #[error("the catalog index at {location} is malformed at {at}: {message}; ask the catalog's publisher to fix it")]
    IndexParse {
        /// Where the index was read from.
        location: String,
        /// `line L column C` for syntax errors, the JSON path (`images[2].rootfs`) otherwise.
        at: String,
        /// The parser's message.
        message: String,
    },
    /// The index declares a format version this banger does not know.
    #[error("the catalog index at {location} has format version {version}, but this banger only understands version 1; upgrade banger")]
    UnsupportedVersion {
        /// Where the index was read from.
        location: String,
        /// The declared version.
        version: u64,
    },
    /// A value in the index (or a location given by the user) breaks a rule.
    #[error("invalid catalog: {what}")]
    Invalid {
        /// What is wrong, with its JSON path.
        what: String,
    },
    /// No image has that name in the catalog.
    #[error("the catalog has no image named {name:?}; available: {}", list(.available))]
    UnknownImage {
        /// The requested name.
        name: String,
        /// The names the catalog offers.
        available: Vec<String>,
    },
    /// No kernel has that name in the catalog.
    #[error("the catalog has no kernel named {name:?}; available: {}", list(.available))]
    UnknownKernel {
        /// The requested name.
        name: String,
        /// The names the catalog offers.
        available: Vec<String>,
    },
    /// The catalog declares an artifact above the configured download cap.
    #[error("{url} is {declared} bytes according to the catalog, above the limit of {cap} bytes; nothing was downloaded (raise the limit if you trust this catalog)")]
    TooLarge {
        /// The artifact.
        url: String,
        /// Its size according to the catalog.
        declared: u64,
        /// The configured cap.
        cap: u64,
    },
    /// The server announced (Content-Length) or the file has more bytes than declared.
    #[error("{url} is {announced} bytes long but the catalog says {size}: the server or the catalog is wrong; nothing was downloaded")]
    LengthMismatch {
        /// The artifact.
        url: String,
        /// What the server announced (or the file's length).
        announced: u64,
        /// The size the catalog declares.
        size: u64,
    },
    /// More bytes arrived than the catalog declares; the transfer was cut off.
    #[error("download of {url} is larger than the catalog says (more than {size} bytes): the server or the catalog is wrong; nothing was unpacked")]
    Oversize {
        /// The artifact.
        url: String,
        /// The size the catalog declares.
        size: u64,
    },
    /// The transfer ended before the declared size.
    #[error("download of {url} stopped after {got} of {want} bytes; run the command again, and if it keeps failing the server or the catalog is wrong")]
    Truncated {
        /// The artifact.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes the catalog declares.
        want: u64,
    },
    /// The content does not hash to the catalog's sha256.
    #[error("download of {url} has sha256 {got}, but the catalog says {want}: the content is damaged or was tampered with; nothing was kept")]
    HashMismatch {
        /// The artifact.
        url: String,
        /// The catalog's sha256.
        want: String,
        /// What the content hashed to.
        got: String,
    },
    /// The server answered with a non-success status.
    #[error("GET {url} answered HTTP {status}; check the catalog URL, or tell the catalog's publisher that this file is missing")]
    Http {
        /// The status code.
        status: u16,
        /// The requested URL.
        url: String,
    },
    /// The request could not be sent or the body could not be read (DNS, TLS, reset, 60 s without data).
    #[error("download of {url} failed after {got} bytes: {source}; check the network and run the command again")]
    Transfer {
        /// The artifact.
        url: String,
        /// Bytes received before the failure.
        got: u64,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// A plain-http URL for a host other than loopback, or a redirect from https to
    /// http: the bytes could be changed in transit (or the index, the trust anchor,
    /// replaced), so banger does not ask.
    #[error("refusing {url}: {reason}; serve the catalog and its files over https (plain http is only accepted for loopback test servers)")]
    Insecure {
        /// The URL refused (or the redirect's source).
        url: String,
        /// Why.
        reason: String,
    },
    /// A local file or the cache could not be read or written.
    #[error("could not {what} {path}: {source}")]
    Io {
        /// The operation (`open`, `write`, `store blob`...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// An [`CatalogError::Io`] builder for `map_err`.
pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> CatalogError {
    let path = path.to_path_buf();
    move |source| CatalogError::Io { what, path, source }
}
