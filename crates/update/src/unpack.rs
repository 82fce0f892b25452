//! A strict unpacker for release tarballs: regular files only, only the paths the
//! release's own `manifest.json` lists (which must come first), each exactly its listed
//! size and hash, written into a fresh directory with `O_EXCL | O_NOFOLLOW`.
//!
//! Why not `banger-image`'s layer applier: that one exists to reproduce whole hostile
//! file trees faithfully (owners, hardlinks, devices, whiteouts) into an ext4 image. A
//! release is a handful of known files; everything else in it is an error, which is
//! simpler to state, and to get right, as its own twenty lines than as a mode of the
//! layer applier. It also keeps the image crate (and its registry client) out of the CLI.

use crate::contents::{classify, top_dir, Contents, FileKind, CONTENTS_NAME, MAX_CONTENTS};
use sha2::Digest;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a tarball was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Not a gzip-compressed tar, or a read failed.
    #[error("reading the release tarball: {0}")]
    Read(String),
    /// The first entry is not the release's `manifest.json`.
    #[error("the release tarball does not start with {0}")]
    NoContents(String),
    /// The release's `manifest.json` is wrong.
    #[error(transparent)]
    Contents(#[from] crate::contents::ContentsError),
    /// A link, directory, device or other non-regular entry.
    #[error("the release tarball holds {path:?}, which is not a regular file (type {kind}); releases contain only files")]
    NotRegular {
        /// Entry path.
        path: String,
        /// Entry type, as tar names it.
        kind: String,
    },
    /// An entry its `manifest.json` does not list (or lists once but appears twice).
    #[error("the release tarball holds {0:?}, which its manifest.json does not list")]
    Unlisted(String),
    /// An entry whose size or hash differs from `manifest.json`.
    #[error("{path} in the release tarball does not match its manifest.json ({what})")]
    Mismatch {
        /// Entry path.
        path: String,
        /// Size or hash.
        what: &'static str,
    },
    /// A listed file the tarball lacks.
    #[error("the release tarball lacks {0}, which its manifest.json lists")]
    Missing(String),
    /// Writing into the staging directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A file that was unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Release path, e.g. `bin/banger`.
    pub path: String,
    /// Where it is now (under the staging directory).
    pub staged: PathBuf,
    /// What it is.
    pub kind: FileKind,
}

fn read_err(e: std::io::Error) -> UnpackError {
    UnpackError::Read(e.to_string())
}

/// Unpack `tarball` (of release `version` for `target`) into the empty directory `dest`.
/// Files this banger does not know how to install (a newer release's additions) are
/// checked against the listing but not written.
pub fn unpack(
    tarball: &Path,
    version: &str,
    target: &str,
    dest: &Path,
) -> Result<(Contents, Vec<Unpacked>), UnpackError> {
    let top = top_dir(version, target);
    let f = std::fs::File::open(tarball).map_err(read_err)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut entries = archive.entries().map_err(read_err)?;

    let want_contents = format!("{top}/{CONTENTS_NAME}");
    let mut first = entries
        .next()
        .ok_or_else(|| UnpackError::NoContents(want_contents.clone()))?
        .map_err(read_err)?;
    let first_path = entry_path(&first)?;
    if first_path != want_contents
        || first.header().entry_type() != tar::EntryType::Regular
        || first.header().size().map_err(read_err)? > MAX_CONTENTS
    {
        return Err(UnpackError::NoContents(want_contents));
    }
    let mut bytes = Vec::new();
    (&mut first)
        .take(MAX_CONTENTS)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let contents = Contents::parse(&bytes, version, target)?;

    let mut seen = vec![false; contents.files.len()];
    let mut out = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(read_err)?;
        let path = entry_path(&entry)?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(UnpackError::NotRegular {
                path,
                kind: format!("{kind:?}"),
            });
        }
        let rel = path
            .strip_prefix(&top)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| UnpackError::Unlisted(path.clone()))?;
        let idx = contents
            .files
            .iter()
            .position(|f| f.path == rel)
            .filter(|i| !seen[*i])
            .ok_or_else(|| UnpackError::Unlisted(path.clone()))?;
        seen[idx] = true;
        let listed = &contents.files[idx];
        if entry.header().size().map_err(read_err)? != listed.size {
            return Err(UnpackError::Mismatch {
                path: rel.into(),
                what: "size",
            });
        }
        let Some(kind) = classify(rel) else {
            // Verified below by its hash only if we write it; a file we will not
            // install is skipped (the tar reader discards its data).
            continue;
        };
        let staged = dest.join(rel);
        let digest = write_file(&mut entry, &staged, listed.size, kind.mode())?;
        if crate::sums::hex(&digest) != listed.sha256 {
            return Err(UnpackError::Mismatch {
                path: rel.into(),
                what: "sha256",
            });
        }
        out.push(Unpacked {
            path: rel.into(),
            staged,
            kind,
        });
    }
    for (f, s) in contents.files.iter().zip(&seen) {
        if !s && classify(&f.path).is_some() {
            return Err(UnpackError::Missing(f.path.clone()));
        }
    }
    Ok((contents, out))
}

fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Result<String, UnpackError> {
    let p = e.path().map_err(read_err)?;
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| UnpackError::Unlisted(p.to_string_lossy().into_owned()))
}

/// Create `dest` (and its parents under the staging dir) and copy exactly `size` bytes.
fn write_file(
    src: &mut impl Read,
    dest: &Path,
    size: u64,
    mode: u32,
) -> Result<[u8; 32], UnpackError> {
    let werr = |e: std::io::Error| UnpackError::Write {
        path: dest.display().to_string(),
        source: e,
    };
    if let Some(parent) = dest.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(werr)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dest)
        .map_err(werr)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = size;
    let mut limited = src.take(size);
    while left > 0 {
        let n = limited.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            return Err(UnpackError::Read(format!("{} ends early", dest.display())));
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).map_err(werr)?;
        left -= n as u64;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(werr)?;
    f.sync_all().map_err(werr)?;
    Ok(h.finalize().into())
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
