//! Why talking to a registry failed.

/// A registry request that failed or was refused. Messages carry what the registry
/// said (shortened) and what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request could not be sent or its answer not read (DNS, TLS, reset, timeout).
    #[error("request to {url} failed: {source}; check that the registry is reachable (a registry without TLS must be on loopback)")]
    Transport {
        /// The URL.
        url: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{url} answered HTTP {status}{}; check the image name and tag", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the error body, made printable.
        message: String,
    },
    /// A body is larger than any real one of its kind.
    #[error("the {what} from {url} is larger than {cap} bytes; refusing it (a hostile or broken registry)")]
    TooLarge {
        /// `manifest`, `token response`, ...
        what: &'static str,
        /// The URL.
        url: String,
        /// The limit.
        cap: u64,
    },
    /// The token realm the registry named is not acceptable.
    #[error("the registry at {registry} sends clients for a token to {realm:?}: {reason}; refusing to go there")]
    Realm {
        /// The registry host.
        registry: String,
        /// The realm URL as given.
        realm: String,
        /// Why it is refused.
        reason: String,
    },
    /// Authentication failed or the challenge is not one banger can answer.
    #[error("authenticating to {registry} failed: {reason}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// A redirect broke the transport rules (https to http, or plain http elsewhere).
    #[error("{url}: {reason}")]
    Redirect {
        /// The URL being fetched.
        url: String,
        /// Why the redirect was refused.
        reason: String,
    },
    /// The manifest is not one banger understands.
    #[error("the manifest of {reference} is not valid: {reason}")]
    Manifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest fetched by digest does not hash to that digest.
    #[error("the registry served a manifest for {expected} that hashes to {actual}; refusing it")]
    ManifestDigest {
        /// The digest asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// An image index has no linux/amd64 entry.
    #[error("{reference} has no linux/amd64 image (an index of other platforms); banger runs linux/amd64 guests")]
    NoPlatform {
        /// The reference.
        reference: String,
    },
}
