//! A small, bounded client for the OCI distribution API: manifests, blobs and the
//! anonymous token flow, each answer read under a cap.
//!
//! oci-client (still used for reference parsing) reads manifests, tokens and error
//! bodies whole and unbounded, and fetches whatever token realm a registry names;
//! it has no option for either. So pulls go through this client instead:
//!
//! - manifests are read up to [`PullLimits::max_manifest_bytes`], tokens up to
//!   [`auth::MAX_TOKEN_BYTES`], error bodies up to [`MAX_ERROR_BYTES`] (only their
//!   start is shown);
//! - the token realm must be https, or the plain-http registry's own host
//!   ([`auth::check_realm`]);
//! - redirects never go from https to http, and plain http is only followed to
//!   registries listed as plain http or to loopback;
//! - a manifest fetched by digest must hash to it.

mod auth;
mod error;

pub use error::RegistryError;

use oci_client::Reference;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::sync::Mutex;
use std::time::Duration;

/// Largest error body read (its start goes into the message).
pub const MAX_ERROR_BYTES: u64 = 4 * 1024;

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// What a manifest request accepts: OCI and Docker manifests and indexes.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Bounds of the registry protocol itself (blob sizes are in [`super::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// Largest manifest or index accepted.
    pub max_manifest_bytes: u64,
    /// Most layers an image may have.
    pub max_layers: usize,
}

impl Default for PullLimits {
    /// 4 MiB manifests (registries themselves refuse larger ones), 256 layers
    /// (Docker's own limit is 127).
    fn default() -> Self {
        PullLimits {
            max_manifest_bytes: 4 << 20,
            max_layers: 256,
        }
    }
}

/// A content descriptor (the fields banger uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`, ...
    #[serde(default)]
    pub os: String,
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// One registry repository, with the token obtained for it (if any).
pub struct Registry {
    http: reqwest::Client,
    base: Url,
    repository: String,
    reference: String,
    token: Mutex<Option<String>>,
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

/// `host[:port]` as the plain-http list names registries.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

impl Registry {
    /// A client for `reference`'s repository. Registries in `plain_http`
    /// (`host:port`) are reached over http, everything else over https.
    pub fn new(reference: &Reference, plain_http: &[String]) -> Result<Registry, RegistryError> {
        let host = reference.resolve_registry();
        let scheme = if plain_http.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        let base_text = format!("{scheme}://{host}/");
        let base = Url::parse(&base_text).map_err(|e| RegistryError::Manifest {
            reference: reference.whole(),
            reason: format!("registry {host:?} does not make a URL: {e}"),
        })?;
        let plain: Vec<String> = plain_http.to_vec();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let to = attempt.url().clone();
            let from_tls = attempt
                .previous()
                .last()
                .is_some_and(|f| f.scheme() == "https");
            match to.scheme() {
                "https" => attempt.follow(),
                "http" if from_tls => {
                    attempt.error(format!("refusing a redirect from https to {to} (a downgrade)"))
                }
                "http" if is_loopback(&to) || plain.contains(&host_port(&to)) => attempt.follow(),
                _ => attempt.error(format!(
                    "refusing a redirect to {to}: plain http only to registries listed as plain http"
                )),
            }
        });
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("banger/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .redirect(policy)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate();
        if is_loopback(&base) {
            b = b.no_proxy();
        }
        let http = b.build().map_err(|source| RegistryError::Transport {
            url: base_text.clone(),
            source,
        })?;
        Ok(Registry {
            http,
            base,
            repository: reference.repository().to_string(),
            reference: reference.whole(),
            token: Mutex::new(None),
        })
    }

    fn url(&self, kind: &str, target: &str) -> String {
        format!("{}v2/{}/{kind}/{target}", self.base, self.repository)
    }

    fn token(&self) -> Option<String> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self.http.get(url);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(t) = self.token() {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        req.send().await.map_err(|e| transport(url, e))
    }

    /// GET `url`, answering one bearer challenge per request (a token can expire
    /// during a long pull: Docker Hub's last five minutes); any non-success status
    /// becomes [`RegistryError::Status`] with the start of the body.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut resp = self.send(url, accept).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            if let Some(c) = challenge {
                drop(resp);
                let token = self.fetch_token(&c).await?;
                *self
                    .token
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
                resp = self.send(url, accept).await?;
            }
        }
        if !resp.status().is_success() {
            return Err(status_error(url, resp).await);
        }
        Ok(resp)
    }

    async fn fetch_token(&self, c: &auth::Challenge) -> Result<String, RegistryError> {
        let mut realm = auth::check_realm(&c.realm, &self.base)?;
        {
            let mut q = realm.query_pairs_mut();
            if let Some(s) = &c.service {
                q.append_pair("service", s);
            }
            let scope = format!("repository:{}:pull", self.repository);
            q.append_pair("scope", &scope);
        }
        let url = realm.to_string();
        let resp = self
            .http
            .get(realm)
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        if !resp.status().is_success() {
            return Err(match status_error(&url, resp).await {
                RegistryError::Status {
                    status, message, ..
                } => RegistryError::Auth {
                    registry: host_port(&self.base),
                    reason: format!("the token service answered HTTP {status}: {message}"),
                },
                other => other,
            });
        }
        let body = read_capped(resp, &url, auth::MAX_TOKEN_BYTES, "token response").await?;
        auth::token_from(&body).map_err(|reason| RegistryError::Auth {
            registry: host_port(&self.base),
            reason,
        })
    }

    /// The manifest bytes and their digest for `target` (a tag or a digest). A
    /// manifest asked for by digest must hash to it.
    pub async fn manifest_bytes(
        &self,
        target: &str,
        cap: u64,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url("manifests", target);
        let resp = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        let bytes = read_capped(resp, &url, cap, "manifest").await?;
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if target.starts_with("sha256:") && target != digest {
            return Err(RegistryError::ManifestDigest {
                expected: target.to_string(),
                actual: digest,
            });
        }
        Ok((bytes, digest))
    }

    /// Resolve `target` to a linux/amd64 image manifest (through one index if the
    /// target is one) and its digest, refusing more than `limits.max_layers` layers.
    pub async fn resolve(
        &self,
        target: &str,
        limits: &PullLimits,
    ) -> Result<(Manifest, String), RegistryError> {
        let (bytes, digest) = self
            .manifest_bytes(target, limits.max_manifest_bytes)
            .await?;
        let (bytes, digest) = match self.parse_index(&bytes)? {
            None => (bytes, digest),
            Some(index) => {
                let entry = index
                    .manifests
                    .iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    })
                    .ok_or_else(|| RegistryError::NoPlatform {
                        reference: self.reference.clone(),
                    })?;
                if !entry.digest.starts_with("sha256:") {
                    return Err(self.bad(format!(
                        "index entry digest {:?} is not sha256",
                        entry.digest
                    )));
                }
                let (bytes, digest) = self
                    .manifest_bytes(&entry.digest, limits.max_manifest_bytes)
                    .await?;
                if self.parse_index(&bytes)?.is_some() {
                    return Err(self.bad("an index points at another index".to_string()));
                }
                (bytes, digest)
            }
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| self.bad(e.to_string()))?;
        if manifest.layers.len() > limits.max_layers {
            return Err(self.bad(format!(
                "it lists {} layers, more than the {} banger accepts",
                manifest.layers.len(),
                limits.max_layers
            )));
        }
        Ok((manifest, digest))
    }

    /// `Some(index)` when `bytes` is an image index (it has `manifests`).
    fn parse_index(&self, bytes: &[u8]) -> Result<Option<Index>, RegistryError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| self.bad(e.to_string()))?;
        if v.get("manifests").is_none() {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| self.bad(e.to_string()))
    }

    fn bad(&self, reason: String) -> RegistryError {
        RegistryError::Manifest {
            reference: self.reference.clone(),
            reason,
        }
    }

    /// Start downloading blob `digest`; the caller streams and checks the body.
    pub async fn blob(&self, digest: &str) -> Result<reqwest::Response, RegistryError> {
        let url = self.url("blobs", digest);
        self.get(&url, None).await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn transport(url: &str, e: reqwest::Error) -> RegistryError {
    if e.is_redirect() {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        return RegistryError::Redirect {
            url: url.to_string(),
            reason,
        };
    }
    RegistryError::Transport {
        url: url.to_string(),
        source: e,
    }
}

/// The body of `resp`, refusing more than `cap` bytes (announced or received).
async fn read_capped(
    mut resp: reqwest::Response,
    url: &str,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what,
        url: url.to_string(),
        cap,
    };
    if resp.content_length().is_some_and(|l| l > cap) {
        return Err(too_large());
    }
    let mut out = vec![];
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(url, e))? {
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error status with the start of its body (at most [`MAX_ERROR_BYTES`] read,
/// control characters replaced).
async fn status_error(url: &str, mut resp: reqwest::Response) -> RegistryError {
    let status = resp.status().as_u16();
    let mut body = vec![];
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = (MAX_ERROR_BYTES as usize).saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BYTES as usize {
            break;
        }
    }
    let message: String = String::from_utf8_lossy(&body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect::<String>()
        .trim()
        .to_string();
    RegistryError::Status {
        url: url.to_string(),
        status,
        message,
    }
}
