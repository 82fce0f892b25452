//! Fetching the index and verified artifact downloads into the blob cache.
//!
//! The catalog's size and sha256 are the only things trusted: the server's
//! Content-Length is only used to refuse early, the stream is cut as soon as it
//! goes past the declared size, and a blob lands in the cache (by rename) only once
//! its size and hash both match. A local file goes through exactly the same checks,
//! so a catalog directory on disk is no more trusted than one on a server.

use super::error::{io, BoxError, CatalogError};
use super::index::{Artifact, CatalogIndex, Location};
use crate::oci::BlobCache;
use reqwest::Url;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Largest index accepted: an index is names and hashes, a few KiB in practice.
pub const MAX_INDEX_BYTES: u64 = 4 << 20;

/// A server that accepts no connection within this delay is considered down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A transfer with no data for this long is considered stalled. There is no total
/// timeout: a large rootfs over a slow link may legitimately take an hour.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Read size for local files.
const FILE_CHUNK: usize = 256 << 10;

/// Read the index at `location` (an `http(s)://` URL, a `file://` URL or a path),
/// at most [`MAX_INDEX_BYTES`], and validate it.
///
/// Relative URLs in an index fetched over http(s) resolve against the URL the index
/// was finally served from (after redirects), as a browser would.
pub async fn fetch_index(location: &str) -> Result<CatalogIndex, CatalogError> {
    let loc = Location::parse(location)?;
    let fetch_err = |source: BoxError| CatalogError::IndexFetch {
        location: loc.to_string(),
        source,
    };
    let too_large = || CatalogError::IndexTooLarge {
        location: loc.to_string(),
        cap: MAX_INDEX_BYTES,
    };
    let (bytes, base) = match &loc {
        Location::Path(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| fetch_err(Box::new(e)))?;
            let mut bytes = vec![];
            // One byte past the cap tells "exactly at the cap" from "above it".
            file.take(MAX_INDEX_BYTES + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| fetch_err(Box::new(e)))?;
            if bytes.len() as u64 > MAX_INDEX_BYTES {
                return Err(too_large());
            }
            (bytes, loc.clone())
        }
        Location::Url(url) => {
            let mut resp = get(url).await.map_err(|e| e.into_catalog(fetch_err))?;
            check_status(&resp, url)?;
            if resp.content_length().is_some_and(|l| l > MAX_INDEX_BYTES) {
                return Err(too_large());
            }
            let base = Location::Url(resp.url().to_string());
            let mut bytes = vec![];
            while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(Box::new(e)))? {
                if (bytes.len() + chunk.len()) as u64 > MAX_INDEX_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            (bytes, base)
        }
    };
    CatalogIndex::parse(&bytes, &base)
}

/// Bring `artifact` into `cache` and return the blob's path.
///
/// In order: refuse a declared size above `cap_bytes` (before any request); reuse a
/// cached blob of the right size; refuse a Content-Length (or file length) above the
/// declared size; stream into a temporary file while hashing, cutting the transfer
/// as soon as it exceeds the declared size; require the exact size and sha256; only
/// then rename into the cache. The temporary file is removed on every failure, and
/// also if the returned future is dropped midway.
///
/// `progress` gets (bytes so far, declared size) after every chunk, and once with
/// (size, size) for a cache hit.
pub async fn download(
    artifact: &Artifact,
    cache: &BlobCache,
    cap_bytes: u64,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<PathBuf, CatalogError> {
    let url = artifact.url.to_string();
    let size = artifact.size;
    if size > cap_bytes {
        return Err(CatalogError::TooLarge {
            url,
            declared: size,
            cap: cap_bytes,
        });
    }
    let digest = artifact.digest();
    let dest = cache.path(&digest).map_err(|e| CatalogError::Invalid {
        what: format!("{url}: {e}"),
    })?;
    // A cached blob of the right size is re-hashed (and dropped if damaged).
    let cached = cache
        .has_verified(&digest, size)
        .await
        .map_err(|e| match e {
            crate::oci::PullError::Io { what, path, source } => {
                CatalogError::Io { what, path, source }
            }
            other => CatalogError::Invalid {
                what: format!("{url}: {other}"),
            },
        })?;
    if cached {
        progress(size, size);
        return Ok(dest);
    }

    // Opening the source first means a 404 or a lying length costs no disk work.
    let mut source = Source::open(&artifact.url, size).await?;

    // Staged in the cache's `tmp/`, like OCI blobs, so `BlobCache::prune` sweeps
    // anything a crash leaves behind.
    let tmp = cache
        .temp_for(&dest, &format!("catalog.{}", artifact.sha256))
        .await
        .map_err(|(path, e)| io("create", &path)(e))?;
    let tmp = TempFile::new(tmp);
    let file = tokio::fs::File::create(&tmp.path)
        .await
        .map_err(io("create", &tmp.path))?;
    let mut sink = Sink {
        file,
        path: &tmp.path,
        hasher: Sha256::new(),
        got: 0,
        size,
        sha256: &artifact.sha256,
        url: &url,
    };

    let mut buf = vec![];
    loop {
        match &mut source {
            Source::Http(resp) => match resp.chunk().await {
                Ok(Some(bytes)) => sink.put(&bytes).await?,
                Ok(None) => break,
                Err(e) => {
                    return Err(CatalogError::Transfer {
                        url: url.clone(),
                        got: sink.got,
                        source: Box::new(e),
                    })
                }
            },
            Source::File(file, path) => {
                buf.resize(FILE_CHUNK, 0);
                let n = file.read(&mut buf).await.map_err(io("read", path))?;
                if n == 0 {
                    break;
                }
                sink.put(&buf[..n]).await?;
            }
        }
        progress(sink.got, size);
    }
    // Hang up before the (possibly slow) sync: nothing more is wanted from the server.
    drop(source);
    sink.finish().await?;
    cache
        .publish(&tmp.path, &dest)
        .await
        .map_err(io("store blob", &dest))?;
    tmp.keep();
    Ok(dest)
}

/// Where the bytes come from.
enum Source {
    Http(reqwest::Response),
    File(tokio::fs::File, PathBuf),
}

impl Source {
    /// Open `location`, refusing a source that announces more than `size` bytes.
    async fn open(location: &Location, size: u64) -> Result<Source, CatalogError> {
        let announced = |announced| CatalogError::LengthMismatch {
            url: location.to_string(),
            announced,
            size,
        };
        match location {
            Location::Url(url) => {
                let resp = get(url).await.map_err(|e| {
                    e.into_catalog(|source| CatalogError::Transfer {
                        url: url.clone(),
                        got: 0,
                        source,
                    })
                })?;
                check_status(&resp, url)?;
                match resp.content_length() {
                    Some(len) if len > size => Err(announced(len)),
                    _ => Ok(Source::Http(resp)),
                }
            }
            Location::Path(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(io("open", path))?;
                let md = file.metadata().await.map_err(io("stat", path))?;
                if !md.is_file() {
                    return Err(CatalogError::Invalid {
                        what: format!("{} is not a regular file", path.display()),
                    });
                }
                if md.len() > size {
                    return Err(announced(md.len()));
                }
                Ok(Source::File(file, path.clone()))
            }
        }
    }
}

/// The temporary file being filled, with the running hash and byte count.
struct Sink<'a> {
    file: tokio::fs::File,
    path: &'a Path,
    hasher: Sha256,
    got: u64,
    size: u64,
    sha256: &'a str,
    url: &'a str,
}

impl Sink<'_> {
    /// Append `chunk`, refusing it (unwritten) when it goes past the declared size.
    async fn put(&mut self, chunk: &[u8]) -> Result<(), CatalogError> {
        self.got += chunk.len() as u64;
        if self.got > self.size {
            return Err(CatalogError::Oversize {
                url: self.url.to_string(),
                size: self.size,
            });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(io("write", self.path))
    }

    /// Check size and hash, and make the data durable before the caller renames it:
    /// a blob under its digest name must never turn out empty after a power loss.
    async fn finish(mut self) -> Result<(), CatalogError> {
        if self.got != self.size {
            return Err(CatalogError::Truncated {
                url: self.url.to_string(),
                got: self.got,
                want: self.size,
            });
        }
        let got: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != self.sha256 {
            return Err(CatalogError::HashMismatch {
                url: self.url.to_string(),
                want: self.sha256.to_string(),
                got,
            });
        }
        self.file.flush().await.map_err(io("write", self.path))?;
        self.file.sync_all().await.map_err(io("sync", self.path))
    }
}

/// A temporary file removed on drop unless kept: failures and cancellation (the
/// future dropped mid-download) both clean up without a path to forget.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> TempFile {
        TempFile { path, keep: false }
    }

    /// The file was renamed away: nothing to remove.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a GET was not answered.
enum GetError {
    /// Refused before or during the request by the transport rules ([`check_url`]).
    Insecure { url: String, reason: String },
    /// Anything else (DNS, TLS, connection...).
    Other(BoxError),
}

impl GetError {
    fn into_catalog(self, other: impl FnOnce(BoxError) -> CatalogError) -> CatalogError {
        match self {
            GetError::Insecure { url, reason } => CatalogError::Insecure { url, reason },
            GetError::Other(e) => other(e),
        }
    }
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Send a GET with banger's client settings. Refuses a non-loopback plain-http URL
/// before any network traffic, and any redirect that breaks [`check_redirect`].
async fn get(url: &str) -> Result<reqwest::Response, GetError> {
    let parsed = Url::parse(url).map_err(|e| GetError::Other(Box::new(e)))?;
    check_url(&parsed).map_err(|reason| GetError::Insecure {
        url: url.to_string(),
        reason,
    })?;
    let client = client(&parsed).map_err(|e| GetError::Other(Box::new(e)))?;
    client.get(parsed).send().await.map_err(|e| {
        if e.is_redirect() {
            // Our policy's message is the source; reqwest's own text only says
            // "error following redirect".
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = s.to_string();
                src = s.source();
            }
            GetError::Insecure {
                url: e.url().map_or_else(|| url.to_string(), Url::to_string),
                reason,
            }
        } else {
            GetError::Other(Box::new(e))
        }
    })
}

/// The transport rule for every URL banger fetches a catalog or an artifact from:
/// https, or plain http to a loopback host (a local test server).
pub(crate) fn check_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("plain http is only accepted for loopback hosts".to_string()),
        other => Err(format!("unsupported scheme {other:?}")),
    }
}

/// The rule for following a redirect from `from` to `to`: never from https to
/// http (a downgrade would hand the transfer to anyone on the path), and the target
/// must pass [`check_url`] itself.
pub(crate) fn check_redirect(from: Option<&Url>, to: &Url) -> Result<(), String> {
    if from.is_some_and(|f| f.scheme() == "https") && to.scheme() != "https" {
        return Err(format!(
            "redirect from https to {to} (a downgrade to plain http)"
        ));
    }
    check_url(to).map_err(|reason| format!("redirect to {to}: {reason}"))
}

fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_redirect(attempt.previous().last(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(reason),
        }
    })
}

/// A client for `url`: bounded connect and idle times, no transparent
/// decompression (sizes and hashes are those of the bytes on the wire), redirects
/// checked by [`check_redirect`], and no proxy for loopback addresses (a proxy
/// cannot reach the user's own loopback).
fn client(url: &Url) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("banger/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_IDLE_TIMEOUT)
        .redirect(redirect_policy())
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate();
    if is_loopback(url) {
        b = b.no_proxy();
    }
    b.build()
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn check_status(resp: &reqwest::Response, url: &str) -> Result<(), CatalogError> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(CatalogError::Http {
            status: resp.status().as_u16(),
            url: url.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for ok in [
            "https://example.org/i.json",
            "http://127.0.0.1:8080/i.json",
            "http://localhost/i.json",
            "http://[::1]:9/i.json",
        ] {
            assert!(check_url(&u(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.org/i.json",
            "http://10.0.0.1/i.json",
            "ftp://x/y",
        ] {
            assert!(check_url(&u(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_never_downgrade() {
        let https = u("https://example.org/a");
        assert!(check_redirect(Some(&https), &u("https://cdn.example.org/b")).is_ok());
        assert!(check_redirect(Some(&https), &u("http://example.org/b")).is_err());
        // Not even to loopback.
        assert!(check_redirect(Some(&https), &u("http://127.0.0.1/b")).is_err());
        let local = u("http://127.0.0.1/a");
        assert!(check_redirect(Some(&local), &u("http://127.0.0.1:81/b")).is_ok());
        assert!(check_redirect(Some(&local), &u("http://example.org/b")).is_err());
        assert!(check_redirect(Some(&local), &u("https://example.org/b")).is_ok());
    }
}
