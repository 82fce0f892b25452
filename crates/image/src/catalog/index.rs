//! The catalog index (format v1): parsing, validation and URL resolution.
//!
//! The index is read once into [`serde_json::Value`] and then deserialized piece by
//! piece, so that a malformed index is reported with the JSON path of the offending
//! entry (`images[2].rootfs`) and a syntax error with its line and column; a
//! catalog is hand-written JSON more often than not.
//!
//! Everything a later step relies on is checked here, once: names are safe as file
//! names and shell words, digests are well-formed, sizes are positive, every image's
//! kernel exists and every `url` resolves to a location banger can fetch.

use super::error::CatalogError;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// The only index format this banger understands.
pub const FORMAT_VERSION: u64 = 1;

/// Longest accepted catalog name.
pub const MAX_NAME_LEN: usize = 64;

/// Where an index or an artifact lives: an http(s) URL or a local file.
///
/// `file://` URLs become [`Location::Path`], so there is a single way to name a
/// local file and a single code path to read one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// An absolute `http://` or `https://` URL (normalized).
    Url(String),
    /// An absolute local path.
    Path(PathBuf),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Url(u) => f.write_str(u),
            Location::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Location {
    /// Interpret a location typed by a user: an `http(s)://` or `file://` URL, or a
    /// path (made absolute against the current directory, so relative artifact URLs
    /// keep resolving if the process later changes directory).
    pub fn parse(s: &str) -> Result<Location, CatalogError> {
        if s.is_empty() {
            return Err(invalid("the catalog location is empty"));
        }
        if let Some(scheme) = url_scheme(s) {
            let url =
                Url::parse(s).map_err(|e| invalid(format!("{s:?} is not a valid URL: {e}")))?;
            return match scheme.to_ascii_lowercase().as_str() {
                "http" | "https" => Ok(Location::Url(url.to_string())),
                "file" => url
                    .to_file_path()
                    .map(Location::Path)
                    .map_err(|()| invalid(format!("{s:?} is not a local file URL"))),
                _ => Err(invalid(format!(
                    "{s:?}: unsupported scheme {scheme:?}; use http://, https://, file:// or a path"
                ))),
            };
        }
        let path = std::path::absolute(s).map_err(super::error::io("resolve", Path::new(s)))?;
        Ok(Location::Path(path))
    }

    /// Resolve `reference` (a catalog `url` value) against this location, the way a
    /// browser resolves a link: relative references are relative to the index's own
    /// URL or to the index file's directory, so a catalog can be a plain directory
    /// served by anything (or not served at all).
    ///
    /// An index fetched over http(s) may only point at http(s) URLs: a remote catalog
    /// must never make banger read local files.
    pub(crate) fn join(&self, reference: &str) -> Result<Location, String> {
        if reference.is_empty() {
            return Err("the url is empty".to_string());
        }
        let base = match self {
            Location::Url(u) => Url::parse(u).map_err(|e| format!("bad base URL {u}: {e}"))?,
            Location::Path(p) => {
                let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Url::from_file_path(&abs)
                    .map_err(|()| format!("{} cannot be used as a base", abs.display()))?
            }
        };
        let joined = base
            .join(reference)
            .map_err(|e| format!("{reference:?} is not a valid URL reference: {e}"))?;
        match (self, joined.scheme()) {
            (_, "http" | "https") => {
                if joined.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{reference:?} has no host"));
                }
                Ok(Location::Url(joined.to_string()))
            }
            (Location::Path(_), "file") => joined
                .to_file_path()
                .map(Location::Path)
                .map_err(|()| format!("{reference:?} is not a local file URL")),
            (Location::Url(_), "file") => Err(format!(
                "{reference:?} points at a local file, but the catalog was fetched over the network; a remote catalog may only point at http(s) URLs"
            )),
            (_, other) => Err(format!(
                "{reference:?} has unsupported scheme {other:?}; use http://, https://, file:// or a relative path"
            )),
        }
    }
}

/// The scheme of `s` when it looks like `scheme://...` (RFC 3986 scheme characters).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// One downloadable file of the catalog: where, what hash, how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Absolute location, resolved against the index's location.
    pub url: Location,
    /// 64 lowercase hex characters.
    pub sha256: String,
    /// Exact size in bytes (> 0).
    pub size: u64,
}

impl Artifact {
    /// The OCI-style digest (`sha256:<hex>`) under which [`crate::oci::BlobCache`]
    /// stores this artifact.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// A kernel offered by the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEntry {
    /// Catalog name (1..64 of `[A-Za-z0-9._-]`).
    pub name: String,
    /// `uname -r` of the kernel; the modules' directory name under `lib/modules/`.
    pub release: String,
    /// Free text for listings (may be empty).
    pub description: String,
    /// The kernel image (bzImage or vmlinux).
    pub kernel: Artifact,
    /// A tar (plain, gzip or zstd) of `lib/modules/<release>/...`,
    /// `usr/lib/modules/<release>/...` or `<release>/...`; absent for a kernel with
    /// everything built in.
    pub modules: Option<Artifact>,
}

/// A root filesystem offered by the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Catalog name (1..64 of `[A-Za-z0-9._-]`).
    pub name: String,
    /// Free text for listings (may be empty).
    pub description: String,
    /// Name of the kernel entry (same index) this image boots with.
    pub kernel: String,
    /// A tar (plain, gzip or zstd) of the whole root filesystem.
    pub rootfs: Artifact,
}

/// A validated catalog index. Only [`CatalogIndex::parse`] builds one, so every
/// value reachable from it satisfies the rules in the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogIndex {
    location: Location,
    kernels: Vec<KernelEntry>,
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct RawArtifact {
    url: String,
    sha256: String,
    size: u64,
}

#[derive(Deserialize)]
struct RawKernel {
    name: String,
    release: String,
    #[serde(default)]
    description: String,
    kernel: Value,
    #[serde(default)]
    modules: Option<Value>,
}

#[derive(Deserialize)]
struct RawImage {
    name: String,
    #[serde(default)]
    description: String,
    kernel: String,
    rootfs: Value,
}

/// Parsing state: where the index came from, for errors and URL resolution.
struct Parser<'a> {
    base: &'a Location,
}

impl Parser<'_> {
    fn parse_error(&self, at: impl Into<String>, message: impl fmt::Display) -> CatalogError {
        CatalogError::IndexParse {
            location: self.base.to_string(),
            at: at.into(),
            message: message.to_string(),
        }
    }

    /// Deserialize `value`, reporting a failure at JSON path `at`.
    fn typed<T: DeserializeOwned>(&self, value: Value, at: &str) -> Result<T, CatalogError> {
        serde_json::from_value(value).map_err(|e| self.parse_error(at, e))
    }

    /// An optional top-level array (absent means empty).
    fn array(&self, top: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, CatalogError> {
        match top.remove(key) {
            None => Ok(vec![]),
            Some(v) => self.typed(v, key),
        }
    }

    fn artifact(&self, value: Value, at: &str) -> Result<Artifact, CatalogError> {
        let raw: RawArtifact = self.typed(value, at)?;
        if !is_sha256_hex(&raw.sha256) {
            return Err(invalid(format!(
                "{at}.sha256 is {:?}; it must be exactly 64 lowercase hex characters",
                raw.sha256
            )));
        }
        if raw.size == 0 {
            return Err(invalid(format!(
                "{at}.size is 0; it must be the exact size in bytes"
            )));
        }
        let url = self
            .base
            .join(&raw.url)
            .map_err(|why| invalid(format!("{at}.url: {why}")))?;
        Ok(Artifact {
            url,
            sha256: raw.sha256,
            size: raw.size,
        })
    }

    fn kernel(&self, value: Value, at: &str) -> Result<KernelEntry, CatalogError> {
        let raw: RawKernel = self.typed(value, at)?;
        check_name(&raw.name, at)?;
        check_release(&raw.release, at)?;
        check_description(&raw.description, at)?;
        let kernel = self.artifact(raw.kernel, &format!("{at}.kernel"))?;
        let modules = match raw.modules {
            None | Some(Value::Null) => None,
            Some(v) => Some(self.artifact(v, &format!("{at}.modules"))?),
        };
        Ok(KernelEntry {
            name: raw.name,
            release: raw.release,
            description: raw.description,
            kernel,
            modules,
        })
    }

    fn image(&self, value: Value, at: &str) -> Result<ImageEntry, CatalogError> {
        let raw: RawImage = self.typed(value, at)?;
        check_name(&raw.name, at)?;
        check_description(&raw.description, at)?;
        let rootfs = self.artifact(raw.rootfs, &format!("{at}.rootfs"))?;
        Ok(ImageEntry {
            name: raw.name,
            description: raw.description,
            kernel: raw.kernel,
            rootfs,
        })
    }
}

impl CatalogIndex {
    /// Parse and validate an index read from `base`, resolving every relative `url`
    /// against `base`. Unknown fields are ignored so that newer catalogs keep
    /// working with older banger as long as the version stays 1.
    pub fn parse(bytes: &[u8], base: &Location) -> Result<CatalogIndex, CatalogError> {
        let p = Parser { base };
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| p.parse_error(format!("line {} column {}", e.line(), e.column()), e))?;
        let Value::Object(mut top) = value else {
            return Err(p.parse_error("the top level", "expected a JSON object"));
        };
        // The version is checked before anything else: a future format may change
        // everything around it, and "upgrade banger" is the only useful answer then.
        let version = match top.get("version") {
            None => return Err(p.parse_error("version", "missing field `version`")),
            Some(v) => v.as_u64().ok_or_else(|| {
                p.parse_error(
                    "version",
                    format!("expected a non-negative integer, found {v}"),
                )
            })?,
        };
        if version != FORMAT_VERSION {
            return Err(CatalogError::UnsupportedVersion {
                location: base.to_string(),
                version,
            });
        }
        let mut kernels = vec![];
        for (i, v) in p.array(&mut top, "kernels")?.into_iter().enumerate() {
            kernels.push(p.kernel(v, &format!("kernels[{i}]"))?);
        }
        let mut images = vec![];
        for (i, v) in p.array(&mut top, "images")?.into_iter().enumerate() {
            images.push(p.image(v, &format!("images[{i}]"))?);
        }
        unique(kernels.iter().map(|k| k.name.as_str()), "kernel")?;
        unique(images.iter().map(|i| i.name.as_str()), "image")?;
        for (i, image) in images.iter().enumerate() {
            if !kernels.iter().any(|k| k.name == image.kernel) {
                return Err(invalid(format!(
                    "images[{i}] ({}) uses kernel {:?}, which the catalog does not list",
                    image.name, image.kernel
                )));
            }
        }
        Ok(CatalogIndex {
            location: base.clone(),
            kernels,
            images,
        })
    }

    /// Where the index was read from (the base of its relative URLs).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Every kernel, in index order.
    pub fn kernels(&self) -> &[KernelEntry] {
        &self.kernels
    }

    /// Every image, in index order.
    pub fn images(&self) -> &[ImageEntry] {
        &self.images
    }

    /// The image called `name`; the error lists what is available.
    pub fn image(&self, name: &str) -> Result<&ImageEntry, CatalogError> {
        self.images
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| CatalogError::UnknownImage {
                name: name.to_string(),
                available: self.image_names().map(str::to_string).collect(),
            })
    }

    /// The kernel called `name`; the error lists what is available.
    pub fn kernel(&self, name: &str) -> Result<&KernelEntry, CatalogError> {
        self.kernels
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| CatalogError::UnknownKernel {
                name: name.to_string(),
                available: self.kernel_names().map(str::to_string).collect(),
            })
    }

    /// Image names in index order (for listings and shell completion).
    pub fn image_names(&self) -> impl Iterator<Item = &str> {
        self.images.iter().map(|i| i.name.as_str())
    }

    /// Kernel names in index order (for listings and shell completion).
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.iter().map(|k| k.name.as_str())
    }
}

fn invalid(what: impl Into<String>) -> CatalogError {
    CatalogError::Invalid { what: what.into() }
}

/// True for exactly 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Names end up in file names, shell completions and command lines: a small,
/// boring alphabet keeps them safe everywhere. `.` and `..` are refused too, since
/// they are valid characters but would name a directory, not an entry.
fn check_name(name: &str, at: &str) -> Result<(), CatalogError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{at}.name is {name:?}; a name is 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// The release becomes a directory name (`lib/modules/<release>`): it must be a
/// single, ordinary path component.
fn check_release(release: &str, at: &str) -> Result<(), CatalogError> {
    let ok = (1..=255).contains(&release.len())
        && release != "."
        && release != ".."
        && !release
            .chars()
            .any(|c| c == '/' || c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{at}.release is {release:?}; it must be the kernel's `uname -r` (no slash, space or control character)"
        )))
    }
}

/// Descriptions are printed on terminals: a remote catalog must not be able to send
/// escape sequences through them.
fn check_description(description: &str, at: &str) -> Result<(), CatalogError> {
    if description.chars().any(char::is_control) {
        Err(invalid(format!(
            "{at}.description contains control characters"
        )))
    } else {
        Ok(())
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, kind: &str) -> Result<(), CatalogError> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(invalid(format!(
                "two {kind}s are named {n:?}; names must be unique"
            )));
        }
    }
    Ok(())
}
