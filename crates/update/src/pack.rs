//! Making a release (the release tool and the tests use this, so the format the updater
//! reads has exactly one writer): a deterministic `.tar.gz` whose first entry is
//! `manifest.json`, `SHA256SUMS` over the tarball and any extra assets (`install.sh`),
//! `SHA256SUMS.sig`, and the entry for the channel's `manifest.json`.
//!
//! Layout written under `out`:
//! ```text
//! out/manifest.json                      the channel manifest (merged with an existing one)
//! out/v<version>/banger-<version>-<target>.tar.gz
//! out/v<version>/SHA256SUMS, SHA256SUMS.sig, install.sh
//! ```

use crate::contents::{classify, top_dir, Contents, FileEntry, CONTENTS_NAME, SCHEMA};
use crate::manifest::tarball_name;
use crate::signature::PrivateKey;
use crate::sums::{hex, Sums};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// Why a release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file path the updater would not install.
    #[error("{0} is not a release path the updater knows (bin/…, lib/banger-agent, man/man1/banger*.1, completions/…)")]
    UnknownPath(String),
    /// The assembled contents do not validate.
    #[error(transparent)]
    Contents(#[from] crate::contents::ContentsError),
    /// The version is not semver.
    #[error(transparent)]
    Version(#[from] crate::manifest::ManifestError),
    /// An existing channel manifest is not one we can extend.
    #[error("the existing channel manifest is not valid: {0}")]
    Channel(String),
    /// Reading an input or writing an output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What goes into a release.
#[derive(Debug, Clone)]
pub struct PackInput {
    /// `X.Y.Z`.
    pub version: String,
    /// Commit of the binaries (what `banger version` reports).
    pub commit: String,
    /// Build time of the binaries.
    pub built_at: String,
    /// Rust target triple.
    pub target: String,
    /// Modification time stamped on every tar entry (unix seconds).
    pub mtime: u64,
    /// `(release path, source file)`, e.g. `("bin/banger", target/release/banger)`.
    pub files: Vec<(String, PathBuf)>,
    /// Files published beside the tarball and listed in `SHA256SUMS` (e.g. `install.sh`).
    pub assets: Vec<(String, PathBuf)>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `out/v<version>`.
    pub dir: PathBuf,
    /// The tarball.
    pub tarball: PathBuf,
    /// The release's entry in the channel manifest.
    pub entry: serde_json::Value,
    /// The tarball's `manifest.json`.
    pub contents: Contents,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sha256_file(p: &Path) -> Result<([u8; 32], u64), PackError> {
    let mut f = std::fs::File::open(p).map_err(io(p))?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(p))?;
    Ok((h.finalize().into(), n))
}

/// Write the release into `out` and sign it with `key`.
pub fn pack(input: &PackInput, key: &PrivateKey, out: &Path) -> Result<Packed, PackError> {
    let version = crate::manifest::parse_version(&input.version)?;
    let mut files = Vec::new();
    for (path, src) in &input.files {
        if classify(path).is_none() {
            return Err(PackError::UnknownPath(path.clone()));
        }
        let (digest, size) = sha256_file(src)?;
        files.push(FileEntry {
            path: path.clone(),
            size,
            sha256: hex(&digest),
        });
    }
    let contents = Contents {
        schema: SCHEMA,
        version: version.to_string(),
        commit: input.commit.clone(),
        built_at: input.built_at.clone(),
        target: input.target.clone(),
        files,
    };
    contents.validate(&contents.version, &input.target)?;

    let dir = out.join(format!("v{version}"));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = tarball_name(&version, &input.target);
    let tarball = dir.join(&name);
    write_tarball(&tarball, &contents, input)?;

    let mut sums = vec![(name.clone(), sha256_file(&tarball)?.0)];
    for (asset, src) in &input.assets {
        let dest = dir.join(asset);
        std::fs::copy(src, &dest).map_err(io(src))?;
        sums.push((asset.clone(), sha256_file(&dest)?.0));
    }
    let sums_text = Sums::render(&sums);
    let sums_path = dir.join("SHA256SUMS");
    std::fs::write(&sums_path, &sums_text).map_err(io(&sums_path))?;
    let sig_path = dir.join("SHA256SUMS.sig");
    std::fs::write(&sig_path, key.sign(sums_text.as_bytes())).map_err(io(&sig_path))?;

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io(p));
    let prefix = format!("v{version}/");
    let entry = serde_json::json!({
        "version": version.to_string(),
        "commit": contents.commit,
        "built_at": contents.built_at,
        "target": contents.target,
        "tarball": {"url": format!("{prefix}{name}"), "size": size(&tarball)?},
        "sha256sums": {"url": format!("{prefix}SHA256SUMS"), "size": size(&sums_path)?},
        "signature": {"url": format!("{prefix}SHA256SUMS.sig"), "size": size(&sig_path)?},
    });
    Ok(Packed {
        dir,
        tarball,
        entry,
        contents,
    })
}

fn header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

fn write_tarball(dest: &Path, contents: &Contents, input: &PackInput) -> Result<(), PackError> {
    let top = top_dir(&contents.version, &contents.target);
    let f = std::fs::File::create(dest).map_err(io(dest))?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let json =
        serde_json::to_vec_pretty(contents).map_err(|e| PackError::Channel(e.to_string()))?;
    let mut h = header(json.len() as u64, 0o644, input.mtime);
    b.append_data(&mut h, format!("{top}/{CONTENTS_NAME}"), json.as_slice())
        .map_err(io(dest))?;
    for (path, src) in &input.files {
        let mode = classify(path).map(|k| k.mode()).unwrap_or(0o644);
        let size = std::fs::metadata(src).map_err(io(src))?.len();
        let mut h = header(size, mode, input.mtime);
        let f = std::fs::File::open(src).map_err(io(src))?;
        b.append_data(&mut h, format!("{top}/{path}"), f)
            .map_err(io(src))?;
    }
    let gz = b.into_inner().map_err(io(dest))?;
    let f = gz.finish().map_err(io(dest))?;
    f.sync_all().map_err(io(dest))?;
    Ok(())
}

/// The channel manifest with `entry` added (replacing the same version and target),
/// newest first. `existing` is the currently published manifest, if any.
pub fn merge_channel(
    existing: Option<&[u8]>,
    entry: serde_json::Value,
) -> Result<Vec<u8>, PackError> {
    let mut releases: Vec<serde_json::Value> = match existing {
        None => Vec::new(),
        Some(b) => {
            let v: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| PackError::Channel(e.to_string()))?;
            if v["schema"] != serde_json::json!(crate::manifest::SCHEMA) {
                return Err(PackError::Channel(format!("schema {}", v["schema"])));
            }
            v["releases"].as_array().cloned().unwrap_or_default()
        }
    };
    releases.retain(|r| !(r["version"] == entry["version"] && r["target"] == entry["target"]));
    releases.push(entry);
    let key = |r: &serde_json::Value| {
        r["version"]
            .as_str()
            .and_then(|v| crate::manifest::parse_version(v).ok())
    };
    releases.sort_by_key(|r| std::cmp::Reverse(key(r)));
    let doc = serde_json::json!({"schema": crate::manifest::SCHEMA, "releases": releases});
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| PackError::Channel(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Add `entry` to the channel in `out`: `out/manifest.json` (merged with the one already
/// there) and `out/latest` (the newest non-pre-release version, for `install.sh`).
pub fn write_channel(out: &Path, entry: serde_json::Value) -> Result<(), PackError> {
    let path = out.join("manifest.json");
    let existing = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    let merged = merge_channel(existing.as_deref(), entry)?;
    let v: serde_json::Value =
        serde_json::from_slice(&merged).map_err(|e| PackError::Channel(e.to_string()))?;
    let latest = v["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| crate::manifest::parse_version(r["version"].as_str()?).ok())
        .filter(|v| v.pre.is_empty())
        .max();
    std::fs::write(&path, &merged).map_err(io(&path))?;
    if let Some(l) = latest {
        let p = out.join("latest");
        std::fs::write(&p, format!("{l}\n")).map_err(io(&p))?;
    }
    Ok(())
}

/// The markers around the public key embedded in `install.sh`.
const KEY_BEGIN: &str = "RELEASE_KEY='";
const KEY_END: &str = "'\n# END RELEASE KEY";

/// The release public key `install.sh` verifies with.
pub fn install_sh_key(script: &str) -> Option<&str> {
    let start = script.find(KEY_BEGIN)? + KEY_BEGIN.len();
    let len = script[start..].find(KEY_END)?;
    Some(&script[start..start + len])
}

/// `install.sh` with its embedded key replaced by `pem` (a release signed with another
/// key, e.g. in tests, ships an installer that can verify it).
pub fn install_sh_with_key(script: &str, pem: &str) -> Result<String, PackError> {
    let old = install_sh_key(script).ok_or_else(|| {
        PackError::Channel(
            "install.sh has no RELEASE_KEY='…' block before # END RELEASE KEY".into(),
        )
    })?;
    let start = script.find(KEY_BEGIN).unwrap_or(0) + KEY_BEGIN.len();
    Ok(format!(
        "{}{}{}",
        &script[..start],
        pem.trim(),
        &script[start + old.len()..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALL_SH: &str = include_str!("../../../install.sh");
    const RELEASE_PUB: &str = include_str!("../../../keys/release.pub");

    #[test]
    fn install_sh_embeds_the_release_key() {
        assert_eq!(
            install_sh_key(INSTALL_SH).map(str::trim),
            Some(RELEASE_PUB.trim()),
            "install.sh must verify with keys/release.pub"
        );
    }

    #[test]
    fn install_sh_key_can_be_swapped() {
        let k = crate::test_support::random_key()
            .public_key()
            .to_pem()
            .unwrap();
        let s = install_sh_with_key(INSTALL_SH, &k).unwrap();
        assert_eq!(install_sh_key(&s).unwrap(), k.trim());
        assert_eq!(
            s.len() - k.trim().len(),
            INSTALL_SH.len() - RELEASE_PUB.trim().len()
        );
    }

    #[test]
    fn merged_channels_stay_sorted_and_unique() {
        let e = |v: &str| serde_json::json!({"version": v, "target": "t"});
        let m = merge_channel(None, e("0.2.0")).unwrap();
        let m = merge_channel(Some(&m), e("0.10.0")).unwrap();
        let m = merge_channel(Some(&m), e("0.2.0")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        let versions: Vec<&str> = v["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["0.10.0", "0.2.0"]);
        assert!(merge_channel(Some(b"{\"schema\":9}"), e("1.0.0")).is_err());
    }
}
