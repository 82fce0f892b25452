//! The release manifest at the compiled-in URL: which releases exist and where their
//! three artifacts are. It is not signed (the signature covers `SHA256SUMS`, which
//! covers the tarball), so it is treated as a list of hints: every field is bounded,
//! every URL must stay on the manifest's own origin, and each sized download must match
//! its declared size exactly.

use crate::download::same_origin;
use serde::Deserialize;

/// URLs as the updater handles them.
pub use reqwest::Url;

/// Largest manifest we read.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Largest release tarball we download.
pub const MAX_TARBALL: u64 = 512 << 20;
/// Largest `SHA256SUMS` we download.
pub const MAX_SUMS: u64 = 64 << 10;
/// Most releases a manifest may list.
const MAX_RELEASES: usize = 1000;

/// The only manifest schema this banger understands.
pub const SCHEMA: u32 = 1;

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("the release manifest is not valid: {0}")]
    Parse(String),
    /// A schema this banger does not know.
    #[error("the release manifest has schema {0}, this banger understands {SCHEMA}; update banger by reinstalling it (see docs/releases.md)")]
    Schema(u32),
    /// Too many releases listed.
    #[error("the release manifest lists {0} releases, more than {MAX_RELEASES}")]
    TooMany(usize),
    /// A version that is not `X.Y.Z` semver.
    #[error("the release manifest lists version {0:?}, which is not X.Y.Z")]
    Version(String),
    /// The same version listed twice for one target.
    #[error("the release manifest lists {0} twice")]
    Duplicate(String),
    /// An artifact URL that does not parse.
    #[error("release {version}: {what} URL {url:?} is not valid: {reason}")]
    Url {
        /// Release version.
        version: String,
        /// Which artifact.
        what: &'static str,
        /// The URL as written.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An artifact on another scheme, host or port than the manifest.
    #[error("release {version}: {what} is at {url}, not on the manifest's server {origin}; refusing to fetch release files from anywhere else")]
    OtherHost {
        /// Release version.
        version: String,
        /// Which artifact.
        what: &'static str,
        /// Where it points.
        url: String,
        /// The manifest's origin.
        origin: String,
    },
    /// An artifact larger than its cap, or empty.
    #[error("release {version}: {what} declares {size} bytes (allowed: 1 to {max})")]
    Size {
        /// Release version.
        version: String,
        /// Which artifact.
        what: &'static str,
        /// Declared size.
        size: u64,
        /// Its cap.
        max: u64,
    },
    /// The tarball's file name is not the one its version and target imply (the name is
    /// what `SHA256SUMS` lists, so it must be predictable).
    #[error("release {version}: the tarball is named {got:?}, expected {want:?}")]
    TarballName {
        /// Release version.
        version: String,
        /// Name found.
        got: String,
        /// Name expected.
        want: String,
    },
}

#[derive(Deserialize)]
struct RawManifest {
    schema: u32,
    releases: Vec<RawRelease>,
}

#[derive(Deserialize)]
struct RawRelease {
    version: String,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    built_at: String,
    target: String,
    tarball: RawArtifact,
    sha256sums: RawArtifact,
    signature: RawArtifact,
}

#[derive(Deserialize)]
struct RawArtifact {
    url: String,
    size: u64,
}

/// One downloadable file of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Absolute URL, on the manifest's origin.
    pub url: reqwest::Url,
    /// Exact size in bytes.
    pub size: u64,
}

impl Artifact {
    /// The last path segment (the file name `SHA256SUMS` lists).
    pub fn file_name(&self) -> &str {
        self.url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("")
    }
}

/// One release for one target, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its version.
    pub version: semver::Version,
    /// Its commit as the manifest states it (informational; the tarball's signed
    /// manifest is what counts).
    pub commit: String,
    /// Its build time as the manifest states it (informational).
    pub built_at: String,
    /// Rust target triple.
    pub target: String,
    /// The tarball.
    pub tarball: Artifact,
    /// `SHA256SUMS`.
    pub sums: Artifact,
    /// `SHA256SUMS.sig`.
    pub signature: Artifact,
}

/// The file name of a release tarball.
pub fn tarball_name(version: &semver::Version, target: &str) -> String {
    format!("banger-{version}-{target}.tar.gz")
}

/// Parse a version as releases write it: `X.Y.Z` or `vX.Y.Z`.
pub fn parse_version(s: &str) -> Result<semver::Version, ManifestError> {
    let t = s.trim();
    let t = t.strip_prefix('v').unwrap_or(t);
    if t.len() > 64 {
        return Err(ManifestError::Version(s.chars().take(64).collect()));
    }
    semver::Version::parse(t).map_err(|_| ManifestError::Version(s.to_string()))
}

/// Parse and validate the manifest fetched from `base`; only releases for `target`
/// are returned, newest first.
pub fn parse(
    bytes: &[u8],
    base: &reqwest::Url,
    target: &str,
) -> Result<Vec<Release>, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
    if raw.schema != SCHEMA {
        return Err(ManifestError::Schema(raw.schema));
    }
    if raw.releases.len() > MAX_RELEASES {
        return Err(ManifestError::TooMany(raw.releases.len()));
    }
    let mut out: Vec<Release> = Vec::new();
    for r in raw.releases {
        if r.target != target {
            continue;
        }
        let version = parse_version(&r.version)?;
        let v = version.to_string();
        if out.iter().any(|o| o.version == version) {
            return Err(ManifestError::Duplicate(v));
        }
        let artifact = |what: &'static str, a: &RawArtifact, max: u64| {
            let url = base.join(&a.url).map_err(|e| ManifestError::Url {
                version: v.clone(),
                what,
                url: a.url.chars().take(200).collect(),
                reason: e.to_string(),
            })?;
            if !same_origin(&url, base) {
                return Err(ManifestError::OtherHost {
                    version: v.clone(),
                    what,
                    url: url.to_string(),
                    origin: base.origin().ascii_serialization(),
                });
            }
            if a.size == 0 || a.size > max {
                return Err(ManifestError::Size {
                    version: v.clone(),
                    what,
                    size: a.size,
                    max,
                });
            }
            Ok(Artifact { url, size: a.size })
        };
        let tarball = artifact("the tarball", &r.tarball, MAX_TARBALL)?;
        let sums = artifact("SHA256SUMS", &r.sha256sums, MAX_SUMS)?;
        let signature = artifact(
            "SHA256SUMS.sig",
            &r.signature,
            crate::signature::MAX_SIGNATURE_FILE,
        )?;
        let want = tarball_name(&version, target);
        if tarball.file_name() != want {
            return Err(ManifestError::TarballName {
                version: v,
                got: tarball.file_name().chars().take(200).collect(),
                want,
            });
        }
        out.push(Release {
            version,
            commit: r.commit.chars().take(64).collect(),
            built_at: r.built_at.chars().take(64).collect(),
            target: r.target,
            tarball,
            sums,
            signature,
        });
    }
    out.sort_by(|a, b| b.version.cmp(&a.version));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "x86_64-unknown-linux-gnu";

    fn base() -> reqwest::Url {
        reqwest::Url::parse("https://releases.example/banger/manifest.json").unwrap()
    }

    fn release(v: &str, tarball_url: &str) -> serde_json::Value {
        serde_json::json!({
            "version": v, "commit": "abc1234", "built_at": "2025-01-01T00:00:00Z", "target": T,
            "tarball": {"url": tarball_url, "size": 1000},
            "sha256sums": {"url": format!("v{v}/SHA256SUMS"), "size": 200},
            "signature": {"url": format!("v{v}/SHA256SUMS.sig"), "size": 96},
            "future_field": true
        })
    }

    fn doc(releases: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"schema": 1, "releases": releases})).unwrap()
    }

    #[test]
    fn parses_resolves_and_sorts() {
        let m = doc(vec![
            release("0.1.0", &format!("v0.1.0/banger-0.1.0-{T}.tar.gz")),
            release("v0.2.0", &format!("v0.2.0/banger-0.2.0-{T}.tar.gz")),
            serde_json::json!({"version": "9.0.0", "target": "aarch64-unknown-linux-gnu",
                "tarball": {"url": "x", "size": 1}, "sha256sums": {"url": "x", "size": 1},
                "signature": {"url": "x", "size": 1}}),
        ]);
        let r = parse(&m, &base(), T).unwrap();
        assert_eq!(r.len(), 2, "other targets are ignored");
        assert_eq!(r[0].version.to_string(), "0.2.0");
        assert_eq!(
            r[0].tarball.url.as_str(),
            format!("https://releases.example/banger/v0.2.0/banger-0.2.0-{T}.tar.gz")
        );
        assert_eq!(r[0].tarball.file_name(), format!("banger-0.2.0-{T}.tar.gz"));
        assert_eq!(r[1].sums.size, 200);
    }

    #[test]
    fn absolute_urls_on_the_same_origin_are_fine() {
        let m = doc(vec![release(
            "0.1.0",
            &format!("https://releases.example:443/other/banger-0.1.0-{T}.tar.gz"),
        )]);
        parse(&m, &base(), T).unwrap();
    }

    #[test]
    fn other_hosts_schemes_and_ports_are_refused() {
        for url in [
            format!("https://evil.example/banger-0.1.0-{T}.tar.gz"),
            format!("http://releases.example/banger-0.1.0-{T}.tar.gz"),
            format!("https://releases.example:8443/banger-0.1.0-{T}.tar.gz"),
            format!("//evil.example/banger-0.1.0-{T}.tar.gz"),
        ] {
            let e = parse(&doc(vec![release("0.1.0", &url)]), &base(), T).unwrap_err();
            assert!(matches!(e, ManifestError::OtherHost { .. }), "{url}: {e}");
        }
    }

    #[test]
    fn bad_manifests_are_refused() {
        let ok_tar = format!("v0.1.0/banger-0.1.0-{T}.tar.gz");
        assert!(matches!(
            parse(b"{\"schema\":2,\"releases\":[]}", &base(), T),
            Err(ManifestError::Schema(2))
        ));
        assert!(matches!(
            parse(b"not json", &base(), T),
            Err(ManifestError::Parse(_))
        ));
        assert!(matches!(
            parse(&doc(vec![release("1.x", &ok_tar)]), &base(), T),
            Err(ManifestError::Version(_))
        ));
        assert!(matches!(
            parse(
                &doc(vec![release("0.1.0", &ok_tar), release("v0.1.0", &ok_tar)]),
                &base(),
                T
            ),
            Err(ManifestError::Duplicate(_))
        ));
        assert!(matches!(
            parse(
                &doc(vec![release("0.1.0", "v0.1.0/other.tar.gz")]),
                &base(),
                T
            ),
            Err(ManifestError::TarballName { .. })
        ));
        let mut big = release("0.1.0", &ok_tar);
        big["tarball"]["size"] = serde_json::json!(MAX_TARBALL + 1);
        assert!(matches!(
            parse(&doc(vec![big]), &base(), T),
            Err(ManifestError::Size { .. })
        ));
        let mut empty = release("0.1.0", &ok_tar);
        empty["signature"]["size"] = serde_json::json!(0);
        assert!(matches!(
            parse(&doc(vec![empty]), &base(), T),
            Err(ManifestError::Size { .. })
        ));
    }

    #[test]
    fn versions_take_an_optional_v() {
        assert_eq!(parse_version("v1.2.3").unwrap().to_string(), "1.2.3");
        assert_eq!(
            parse_version("1.2.3-rc.1").unwrap().to_string(),
            "1.2.3-rc.1"
        );
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("vv1.2.3").is_err());
    }
}
