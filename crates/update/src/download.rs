//! Size-capped downloads that never leave the manifest's origin (redirects included).

use sha2::Digest;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A response may stall this long between bytes before we give up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The HTTP client could not be built.
    #[error("preparing the HTTP client: {0}")]
    Client(String),
    /// Connecting, sending or receiving failed (including a connection closed early).
    #[error("downloading {url}: {reason}; check your network and try again")]
    Transfer {
        /// What was being fetched.
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("downloading {url}: the server answered {status}")]
    Status {
        /// What was being fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// More bytes than allowed (declared or received).
    #[error("downloading {url}: more than {max} bytes; refusing an oversized download")]
    TooLarge {
        /// What was being fetched.
        url: String,
        /// The cap.
        max: u64,
    },
    /// Fewer bytes than the manifest declares.
    #[error("downloading {url}: got {got} bytes, the manifest declares {want}; the download was truncated")]
    Truncated {
        /// What was being fetched.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// Writing the downloaded file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Scheme, host and port equal.
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A client bound to one origin.
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client that follows at most 5 redirects, and only within `origin`'s origin.
    pub fn new(origin: &reqwest::Url) -> Result<Self, DownloadError> {
        let home = origin.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if !same_origin(attempt.url(), &home) {
                let to = attempt.url().to_string();
                attempt.error(format!(
                    "redirected to {to}, off the release server; refusing"
                ))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("banger-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::Client(e.to_string()))?;
        Ok(Self { client })
    }

    async fn start(
        &self,
        url: &reqwest::Url,
        max: u64,
    ) -> Result<reqwest::Response, DownloadError> {
        let transfer = |e: reqwest::Error| DownloadError::Transfer {
            url: url.to_string(),
            reason: error_chain(&e),
        };
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(transfer)?;
        if !resp.status().is_success() {
            return Err(DownloadError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(DownloadError::TooLarge {
                url: url.to_string(),
                max,
            });
        }
        Ok(resp)
    }

    /// The whole body, at most `max` bytes.
    pub async fn bytes(&self, url: &reqwest::Url, max: u64) -> Result<Vec<u8>, DownloadError> {
        let mut resp = self.start(url, max).await?;
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| DownloadError::Transfer {
            url: url.to_string(),
            reason: error_chain(&e),
        })? {
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(DownloadError::TooLarge {
                    url: url.to_string(),
                    max,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Exactly `size` bytes, as the manifest declares them.
    pub async fn exact(&self, url: &reqwest::Url, size: u64) -> Result<Vec<u8>, DownloadError> {
        let b = self.bytes(url, size).await?;
        if (b.len() as u64) < size {
            return Err(DownloadError::Truncated {
                url: url.to_string(),
                got: b.len() as u64,
                want: size,
            });
        }
        Ok(b)
    }

    /// Exactly `size` bytes into a new file `dest` (fsynced); returns its SHA-256.
    pub async fn exact_to_file(
        &self,
        url: &reqwest::Url,
        size: u64,
        dest: &Path,
    ) -> Result<[u8; 32], DownloadError> {
        let write = |e: std::io::Error| DownloadError::Write {
            path: dest.display().to_string(),
            source: e,
        };
        let mut resp = self.start(url, size).await?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(write)?;
        let mut h = sha2::Sha256::new();
        let mut got: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| DownloadError::Transfer {
            url: url.to_string(),
            reason: error_chain(&e),
        })? {
            got += chunk.len() as u64;
            if got > size {
                return Err(DownloadError::TooLarge {
                    url: url.to_string(),
                    max: size,
                });
            }
            h.update(&chunk);
            f.write_all(&chunk).map_err(write)?;
        }
        if got < size {
            return Err(DownloadError::Truncated {
                url: url.to_string(),
                got,
                want: size,
            });
        }
        f.sync_all().map_err(write)?;
        Ok(h.finalize().into())
    }
}

/// An error with its sources, on one line (reqwest's top-level message alone says
/// little, e.g. "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Fault, Server};

    #[test]
    fn caps_statuses_and_truncation() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(t.path().join("small"), b"hello").unwrap();
        let s = Server::start(t.path()).unwrap();
        let url = |p: &str| reqwest::Url::parse(&format!("{}/{p}", s.base())).unwrap();
        let f = Fetcher::new(&url("")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(
                f.bytes(&url("big"), 1 << 20).await,
                Err(DownloadError::TooLarge { .. })
            ));
            assert_eq!(f.exact(&url("small"), 5).await.unwrap(), b"hello");
            assert!(matches!(
                f.exact(&url("small"), 6).await,
                Err(DownloadError::Truncated {
                    got: 5,
                    want: 6,
                    ..
                })
            ));
            assert!(matches!(
                f.exact(&url("small"), 4).await,
                Err(DownloadError::TooLarge { .. })
            ));
            assert!(matches!(
                f.bytes(&url("missing"), 10).await,
                Err(DownloadError::Status { status: 404, .. })
            ));
            s.fault("/big", Fault::Truncate(1000));
            let e = f
                .exact_to_file(&url("big"), 3 << 20, &t.path().join("out"))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    DownloadError::Transfer { .. } | DownloadError::Truncated { .. }
                ),
                "{e}"
            );
        });
    }
}
