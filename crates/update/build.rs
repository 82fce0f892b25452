//! Compiles the release trust anchors into banger: the public key that must have
//! signed `SHA256SUMS`, and the URL of the release manifest.
//!
//! Both are fixed at build time on purpose: nothing a user, a daemon config or an
//! environment variable of a running banger says can point the updater at another
//! server or make it accept another key. Tests and the end-to-end suite build their
//! own binaries with a test key and a loopback URL through these two build-time
//! variables (a build with either set is a test build and says so in `banger update`):
//! - `BANGER_RELEASE_PUBKEY_FILE`: a PEM public key file (default `keys/release.pub`);
//! - `BANGER_RELEASE_MANIFEST_URL`: the manifest URL (https, or http on loopback only).

use std::path::{Path, PathBuf};

/// Where official releases are published (see docs/releases.md).
const DEFAULT_MANIFEST_URL: &str = "https://releases.banger.dev/banger/manifest.json";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BANGER_RELEASE_PUBKEY_FILE");
    println!("cargo:rerun-if-env-changed=BANGER_RELEASE_MANIFEST_URL");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir);

    let key_override = std::env::var("BANGER_RELEASE_PUBKEY_FILE")
        .ok()
        .filter(|v| !v.is_empty());
    let key_path = key_override
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("keys/release.pub"));
    println!("cargo:rerun-if-changed={}", key_path.display());
    let key = std::fs::read_to_string(&key_path)
        .unwrap_or_else(|e| panic!("reading the release public key {}: {e}", key_path.display()));
    if key.len() > 4096
        || !key.contains("-----BEGIN PUBLIC KEY-----")
        || !key.contains("-----END PUBLIC KEY-----")
    {
        panic!(
            "{} is not a PEM public key (-----BEGIN PUBLIC KEY-----)",
            key_path.display()
        );
    }

    let url_override = std::env::var("BANGER_RELEASE_MANIFEST_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let url = url_override
        .clone()
        .unwrap_or_else(|| DEFAULT_MANIFEST_URL.to_string());
    check_url(&url);

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    std::fs::write(out.join("release.pub"), key.trim().as_bytes())
        .unwrap_or_else(|e| panic!("writing the release key into OUT_DIR: {e}"));
    println!("cargo:rustc-env=BANGER_RELEASE_MANIFEST_URL={url}");
    let test_build = key_override.is_some() || url_override.is_some();
    println!(
        "cargo:rustc-env=BANGER_RELEASE_TEST_BUILD={}",
        if test_build { "1" } else { "0" }
    );
}

/// https anywhere; plain http only to loopback (test servers). No credentials, no
/// whitespace, no fragment.
fn check_url(url: &str) {
    let bad = |why: &str| panic!("BANGER_RELEASE_MANIFEST_URL={url:?}: {why}");
    if url.len() > 512 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bad("too long or contains whitespace");
    }
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = match r.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => r.split(['/', ':']).next().unwrap_or(""),
        };
        if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
            bad("plain http is allowed only to loopback (127.0.0.1, localhost, [::1])");
        }
        r
    } else {
        bad("must start with https:// (or http:// to loopback)");
        ""
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || url.contains('#') {
        bad("needs a host, and no user:password@ or #fragment");
    }
}
