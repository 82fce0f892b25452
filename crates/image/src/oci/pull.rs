//! `image pull <oci-ref>`: resolve a reference to its linux/amd64 manifest, fetch the
//! config and layers into the blob cache, then apply them.
//!
//! Fetching is async (network); applying is blocking file work the daemon should run
//! on a blocking thread. Both halves are separate so a daemon can coalesce concurrent
//! pulls around the fetch and report progress per layer.

use super::apply::{AppliedTree, Applier, ApplyOptions, LayerStats};
use super::cache::{BlobCache, Budget};
use super::error::ApplyError;
use super::layer::{is_layer_media_type, LayerDescriptor, Limits};
use super::registry::{PullLimits, Registry, RegistryError};
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
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
    /// The registry refused, could not be reached, or answered something refused.
    #[error("registry request for {reference} failed: {source}")]
    Registry {
        /// The reference.
        reference: String,
        /// What went wrong.
        source: Box<RegistryError>,
    },
    /// The layers together are larger than the total download cap.
    #[error("the layers of {reference} add up to more than {cap} bytes (the total download cap); nothing more is downloaded (raise the limit if the image is trusted)")]
    TotalTooLarge {
        /// The reference.
        reference: String,
        /// The cap.
        cap: u64,
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
    /// Manifest size and layer count caps.
    pub protocol: PullLimits,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            limits: Limits::default(),
            plain_http: vec![],
            max_config_bytes: 4 * 1024 * 1024,
            protocol: PullLimits::default(),
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

/// An oci-client client with banger's settings (linux/amd64 from indexes, plain
/// HTTP only for the listed registries, bounded waits), for pushing in tests and
/// tools. Pulls ([`fetch`]) do not use it: oci-client reads registry answers
/// without bounds (see [`super::registry`]).
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
///
/// Bounded at every step: the manifest (and any index) by
/// [`PullLimits::max_manifest_bytes`], the layer count by [`PullLimits::max_layers`],
/// each blob by its cap, and all layers together by
/// [`Limits::max_total_compressed`], checked on the declared sizes before the first
/// download and on the bytes received while downloading.
pub async fn fetch(
    reference: &str,
    cache: &BlobCache,
    opts: &PullOptions,
    progress: &mut (dyn FnMut(PullEvent) + Send),
) -> Result<PulledImage, PullError> {
    let r = parse_reference(reference)?;
    let registry_err = |source| PullError::Registry {
        reference: r.whole(),
        source: Box::new(source),
    };
    let registry = Registry::new(&r, &opts.plain_http).map_err(registry_err)?;
    let target = r.digest().or(r.tag()).unwrap_or("latest").to_string();
    let (manifest, manifest_digest) = registry
        .resolve(&target, &opts.protocol)
        .await
        .map_err(registry_err)?;
    // Refuse unusable layers before downloading anything.
    for l in &manifest.layers {
        if !is_layer_media_type(&l.media_type) {
            return Err(PullError::NotALayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
            });
        }
    }
    let declared = manifest
        .layers
        .iter()
        .fold(0u64, |sum, l| sum.saturating_add(l.size));
    let total_cap = opts.limits.max_total_compressed;
    if declared > total_cap {
        return Err(PullError::TotalTooLarge {
            reference: r.whole(),
            cap: total_cap,
        });
    }
    progress(PullEvent::Resolved {
        manifest_digest: manifest_digest.clone(),
        layers: manifest.layers.len(),
        bytes: declared,
    });
    let mut config_budget = Budget {
        left: opts.max_config_bytes,
        cap: opts.max_config_bytes,
    };
    let (config_path, _) = cache
        .fetch(
            &registry,
            &r,
            &manifest.config,
            opts.max_config_bytes,
            &mut config_budget,
        )
        .await?;
    let config = read_config(&config_path, &r.whole(), opts.max_config_bytes)?;
    if config.os != "linux" || config.architecture != "amd64" {
        return Err(PullError::Platform {
            reference: r.whole(),
            os: config.os,
            architecture: config.architecture,
        });
    }
    // Bytes still allowed over all layers; each download counts against it as it
    // streams.
    let mut budget = Budget {
        left: total_cap,
        cap: total_cap,
    };
    let mut layers = vec![];
    for (index, l) in manifest.layers.iter().enumerate() {
        let (path, cached) = cache
            .fetch(&registry, &r, l, opts.limits.max_compressed, &mut budget)
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
                bytes: l.size,
            }
        });
        layers.push((
            path,
            LayerDescriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
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

fn read_config(path: &Path, reference: &str, cap: u64) -> Result<ImageConfig, PullError> {
    use std::io::Read as _;
    let mut bytes = vec![];
    std::fs::File::open(path)
        .and_then(|f| f.take(cap).read_to_end(&mut bytes))
        .map_err(|source| PullError::Io {
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
