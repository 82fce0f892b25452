//! `image pull <oci-ref>`: resolve a reference to its linux/amd64 manifest, fetch the
//! config and layers into the blob cache, then apply them.
//!
//! Fetching is async (network); applying is blocking file work the daemon should run
//! on a blocking thread. Both halves are separate so a daemon can coalesce concurrent
//! pulls around the fetch and report progress per layer.

use super::apply::{AppliedTree, Applier, ApplyOptions, LayerStats};
use super::cache::BlobCache;
use super::error::ApplyError;
use super::layer::{is_layer_media_type, LayerDescriptor, Limits};
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("{reference:?} is not an image reference ({reason}); expected e.g. registry.example:5000/name:tag")]
    BadReference {
        /// What was given.
        reference: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The registry refused or could not be reached.
    #[error("registry request for {reference} failed: {source}; check the reference, that the registry is reachable and, for a registry without TLS, that it is listed as plain HTTP")]
    Registry {
        /// The reference.
        reference: String,
        /// oci-client's error.
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// The download broke off.
    #[error("downloading blob {digest} failed: {source}; pull again")]
    Download {
        /// The blob.
        digest: String,
        /// The transport error.
        source: std::io::Error,
    },
    /// A digest in the manifest is not a sha256 digest.
    #[error("the manifest names blob {0:?}, which is not a sha256 digest banger can verify")]
    BadDigest(String),
    /// A blob is larger than allowed (or than its descriptor says).
    #[error("blob {digest} is larger than {cap} bytes (its descriptor or the configured cap); refusing it")]
    BlobTooLarge {
        /// The blob.
        digest: String,
        /// The limit.
        cap: u64,
    },
    /// A blob's size differs from its descriptor.
    #[error("blob {digest} is {actual} bytes but its descriptor says {expected}; the registry served a damaged blob, pull again")]
    BlobSize {
        /// The blob.
        digest: String,
        /// From the descriptor.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob {digest} hashes to {actual}; the registry served damaged or tampered content, refusing it")]
    BlobDigest {
        /// The blob (expected digest).
        digest: String,
        /// What it hashed to.
        actual: String,
    },
    /// The manifest lists something that is not a tar layer.
    #[error(
        "layer {digest} has media type {media_type:?}, which is not a tar layer banger can apply"
    )]
    NotALayer {
        /// The blob.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// The image is for another platform.
    #[error("{reference} is a {os}/{architecture} image; banger runs linux/amd64 guests")]
    Platform {
        /// The reference.
        reference: String,
        /// Its OS.
        os: String,
        /// Its architecture.
        architecture: String,
    },
    /// The config blob is not an image config.
    #[error("the image config of {reference} is not valid: {reason}")]
    Config {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A cache file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Blob size caps (the compressed cap also bounds downloads).
    pub limits: Limits,
    /// Registries (`host:port`) reached over plain HTTP, e.g. a local test registry.
    pub plain_http: Vec<String>,
    /// Largest config blob accepted.
    pub max_config_bytes: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            limits: Limits::default(),
            plain_http: vec![],
            max_config_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The parts of the image config banger keeps (for the manifest and `image show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `linux`.
    pub os: String,
    /// `amd64`.
    pub architecture: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// USER, if set.
    pub user: Option<String>,
    /// WORKDIR, if set.
    pub working_dir: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRun>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
}

/// A pulled image: everything needed to apply it, all in the blob cache.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as given, normalised (`registry/repo:tag`).
    pub reference: String,
    /// Digest of the platform manifest that was pulled.
    pub manifest_digest: String,
    /// What the config says.
    pub config: ImageConfig,
    /// Layer blobs in order, with their descriptors.
    pub layers: Vec<(PathBuf, LayerDescriptor)>,
}

/// Progress of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest was resolved.
    Resolved {
        /// Manifest digest.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
        /// Sum of layer sizes.
        bytes: u64,
    },
    /// A layer was already in the cache.
    LayerCached {
        /// Index in the manifest.
        index: usize,
        /// Its digest.
        digest: String,
    },
    /// A layer was downloaded and verified.
    LayerFetched {
        /// Index in the manifest.
        index: usize,
        /// Its digest.
        digest: String,
        /// Its size.
        bytes: u64,
    },
}

/// A client for `reference`'s registry with banger's settings: linux/amd64 from
/// indexes, plain HTTP only for the listed registries, bounded waits.
pub fn client(opts: &PullOptions) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(opts.plain_http.clone()),
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    })
}

/// Parse an image reference (`name:tag`, `host:port/name@sha256:...`).
pub fn parse_reference(reference: &str) -> Result<Reference, PullError> {
    reference
        .parse()
        .map_err(|e: oci_client::ParseError| PullError::BadReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })
}

/// Resolve `reference` and bring its config and layers into `cache`.
pub async fn fetch(
    reference: &str,
    cache: &BlobCache,
    opts: &PullOptions,
    progress: &mut (dyn FnMut(PullEvent) + Send),
) -> Result<PulledImage, PullError> {
    let r = parse_reference(reference)?;
    let client = client(opts);
    let (manifest, manifest_digest) = client
        .pull_image_manifest(&r, &RegistryAuth::Anonymous)
        .await
        .map_err(|source| PullError::Registry {
            reference: r.whole(),
            source: Box::new(source),
        })?;
    // Refuse unusable layers before downloading anything.
    for l in &manifest.layers {
        if !is_layer_media_type(&l.media_type) {
            return Err(PullError::NotALayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
            });
        }
    }
    progress(PullEvent::Resolved {
        manifest_digest: manifest_digest.clone(),
        layers: manifest.layers.len(),
        bytes: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
    });
    let (config_path, _) = cache
        .fetch(&client, &r, &manifest.config, opts.max_config_bytes)
        .await?;
    let config = read_config(&config_path, &r.whole())?;
    if config.os != "linux" || config.architecture != "amd64" {
        return Err(PullError::Platform {
            reference: r.whole(),
            os: config.os,
            architecture: config.architecture,
        });
    }
    let mut layers = vec![];
    for (index, l) in manifest.layers.iter().enumerate() {
        let (path, cached) = cache
            .fetch(&client, &r, l, opts.limits.max_compressed)
            .await?;
        progress(if cached {
            PullEvent::LayerCached {
                index,
                digest: l.digest.clone(),
            }
        } else {
            PullEvent::LayerFetched {
                index,
                digest: l.digest.clone(),
                bytes: l.size as u64,
            }
        });
        layers.push((
            path,
            LayerDescriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size as u64,
            },
        ));
    }
    Ok(PulledImage {
        reference: r.whole(),
        manifest_digest,
        config,
        layers,
    })
}

fn read_config(path: &Path, reference: &str) -> Result<ImageConfig, PullError> {
    let bytes = std::fs::read(path).map_err(|source| PullError::Io {
        what: "read",
        path: path.into(),
        source,
    })?;
    let raw: RawConfig = serde_json::from_slice(&bytes).map_err(|e| PullError::Config {
        reference: reference.into(),
        reason: e.to_string(),
    })?;
    let run = raw.config.unwrap_or_default();
    Ok(ImageConfig {
        os: raw.os,
        architecture: raw.architecture,
        env: run.env.unwrap_or_default(),
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        user: run.user.filter(|u| !u.is_empty()),
        working_dir: run.working_dir.filter(|w| !w.is_empty()),
    })
}

/// Apply a pulled image's layers in order into `staging` (blocking: run it on a
/// blocking thread). `progress(index, stats)` follows each layer.
pub fn apply_pulled(
    image: &PulledImage,
    staging: &Path,
    opts: ApplyOptions,
    progress: &mut dyn FnMut(usize, &LayerStats),
) -> Result<AppliedTree, ApplyError> {
    let mut a = Applier::new(staging, opts)?;
    for (i, (path, desc)) in image.layers.iter().enumerate() {
        let stats = a.apply_layer(path, desc)?;
        progress(i, &stats);
    }
    a.finish()
}
