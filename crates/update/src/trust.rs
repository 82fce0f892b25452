//! The trust anchors compiled into this binary (see `build.rs`): the release public
//! key and the manifest URL. There is deliberately no runtime way to change either.

use crate::signature::{PublicKey, SignatureError};

/// The release public key (PEM), from `keys/release.pub` or a test build's key.
pub const BUILTIN_PUBLIC_KEY_PEM: &str = include_str!(concat!(env!("OUT_DIR"), "/release.pub"));
/// Where the release manifest lives.
pub const BUILTIN_MANIFEST_URL: &str = env!("BANGER_RELEASE_MANIFEST_URL");
/// Whether this binary was built with a test key or URL (`BANGER_RELEASE_*` at build time).
pub const TEST_BUILD: bool = matches!(env!("BANGER_RELEASE_TEST_BUILD").as_bytes(), b"1");

/// What a manifest must come from and be signed by.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Key that must have signed `SHA256SUMS`.
    pub key: PublicKey,
    /// The release manifest; every artifact must be on its origin.
    pub manifest_url: reqwest::Url,
}

/// The compiled-in anchors do not parse (a broken build).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The compiled-in key is not a P-256 public key.
    #[error(
        "this banger was built with an unusable release key: {0}; reinstall banger from a release"
    )]
    Key(#[from] SignatureError),
    /// The compiled-in URL does not parse.
    #[error("this banger was built with an unusable manifest URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
}

impl Trust {
    /// The anchors built into this binary.
    pub fn builtin() -> Result<Self, TrustError> {
        let key = PublicKey::from_pem(BUILTIN_PUBLIC_KEY_PEM)?;
        let manifest_url =
            reqwest::Url::parse(BUILTIN_MANIFEST_URL).map_err(|e| TrustError::Url {
                url: BUILTIN_MANIFEST_URL.into(),
                reason: e.to_string(),
            })?;
        Ok(Self { key, manifest_url })
    }
}
