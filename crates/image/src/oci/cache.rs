//! The content-addressed blob cache: `<dir>/sha256/<hex>`, filled only with blobs
//! whose size and sha256 were checked while they streamed in.
//!
//! A blob lands under its final name by an atomic rename of a fully verified and
//! fsynced temporary file, followed by an fsync of the blob directory
//! ([`crate::durable`] has the order), so neither a crash nor a concurrent pull of
//! the same blob ever leaves a partial blob under a digest name. A cached blob
//! whose size matches is re-hashed before it is reused, and dropped if its content
//! no longer matches its name; layers are checked once more (same fd) right before
//! they are applied.

use super::pull::PullError;
use super::registry::{Descriptor, Registry};
use oci_client::Reference;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

/// A directory of verified blobs.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

/// What [`BlobCache::prune`] removed (or would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: u64,
    /// Bytes freed.
    pub bytes: u64,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PullError {
    let path = path.to_path_buf();
    move |source| PullError::Io { what, path, source }
}

/// What is left of a pull's total download cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Bytes still allowed.
    pub left: u64,
    /// The whole cap (for the error message).
    pub cap: u64,
}

/// Temporary names unique within the process (the pid covers other processes).
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl BlobCache {
    /// A cache rooted at `dir` (created on first download).
    pub fn new(dir: impl Into<PathBuf>) -> BlobCache {
        BlobCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` lives. Only `sha256:<64 hex>` digests are
    /// accepted, so a digest from a manifest can never name a path outside the cache.
    pub fn path(&self, digest: &str) -> Result<PathBuf, PullError> {
        let hex = super::layer::sha256_hex(digest)
            .map_err(|_| PullError::BadDigest(digest.to_string()))?;
        Ok(self.dir.join("sha256").join(hex))
    }

    /// A fresh temporary path for a download that will be renamed to `dest`, with
    /// `tmp/` and `dest`'s directory created. Every download stages in `tmp/` (same
    /// filesystem, so the final rename is atomic), and [`BlobCache::prune`] sweeps
    /// what a crash leaves there. The error names the directory that failed.
    pub(crate) async fn temp_for(
        &self,
        dest: &Path,
        name: &str,
    ) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        let tmp_dir = self.dir.join("tmp");
        for d in [Some(tmp_dir.as_path()), dest.parent()]
            .into_iter()
            .flatten()
        {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| (d.to_path_buf(), e))?;
        }
        Ok(tmp_dir.join(format!(
            "{name}.{}.{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// True when the blob is present with the expected size and its content still
    /// hashes to `digest`. A blob of the right size but the wrong content (damaged
    /// on disk, or written by a crashed older banger) is removed so the caller
    /// downloads it again. Hashing is blocking work: it runs on a blocking thread.
    pub async fn has_verified(&self, digest: &str, size: u64) -> Result<bool, PullError> {
        if !self.has(digest, size) {
            return Ok(false);
        }
        let path = self.path(digest)?;
        let (p, d) = (path.clone(), digest.to_string());
        let hashed = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&p)?;
            super::layer::hash_file(&mut f, size, &d)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await
        .map_err(|e| io("hash", &path)(std::io::Error::other(e)))?;
        match hashed {
            Ok((hex, got)) if got == size && format!("sha256:{hex}") == digest => Ok(true),
            Ok(_) | Err(_) => {
                tracing::warn!(blob = %path.display(), "cached blob does not match its digest; removing it");
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(false),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io("remove damaged blob", &path)(e)),
                }
            }
        }
    }

    /// Durably move a verified, fsynced temporary file to `dest` and fsync the
    /// blob directory, so the name survives a crash together with the data.
    pub(crate) async fn publish(&self, tmp: &Path, dest: &Path) -> std::io::Result<()> {
        tokio::fs::rename(tmp, dest).await?;
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::task::spawn_blocking(move || crate::durable::sync_dir(&dir))
            .await
            .map_err(std::io::Error::other)?
    }

    /// True when the blob is present with the expected size (size only: see
    /// [`BlobCache::has_verified`] before trusting its content).
    pub fn has(&self, digest: &str, size: u64) -> bool {
        self.path(digest)
            .ok()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// Download `desc` from `reference`'s repository unless present; refuse more than
    /// `cap` bytes or anything that does not match the descriptor. Every byte
    /// received is also taken from `budget` (the pull's running total), and the
    /// download stops as soon as it is spent.
    pub(crate) async fn fetch(
        &self,
        registry: &Registry,
        reference: &Reference,
        desc: &Descriptor,
        cap: u64,
        budget: &mut Budget,
    ) -> Result<(PathBuf, bool), PullError> {
        let size = desc.size;
        let dest = self.path(&desc.digest)?;
        if size > cap {
            return Err(PullError::BlobTooLarge {
                digest: desc.digest.clone(),
                cap,
            });
        }
        if self.has_verified(&desc.digest, size).await? {
            return Ok((dest, true));
        }
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        let tmp = self
            .temp_for(&dest, name)
            .await
            .map_err(|(path, e)| io("create", &path)(e))?;
        let r = self
            .download(registry, reference, desc, cap, budget, &tmp)
            .await;
        let r = match r {
            Ok(()) => self
                .publish(&tmp, &dest)
                .await
                .map_err(io("store blob", &dest)),
            Err(e) => Err(e),
        };
        if r.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        r.map(|()| (dest, false))
    }

    async fn download(
        &self,
        registry: &Registry,
        reference: &Reference,
        desc: &Descriptor,
        cap: u64,
        budget: &mut Budget,
        tmp: &Path,
    ) -> Result<(), PullError> {
        let size = desc.size;
        let mut resp = registry
            .blob(&desc.digest)
            .await
            .map_err(|source| PullError::Registry {
                reference: reference.whole(),
                source: Box::new(source),
            })?;
        if resp.content_length().is_some_and(|l| l > size.min(cap)) {
            return Err(PullError::BlobTooLarge {
                digest: desc.digest.clone(),
                cap: size.min(cap),
            });
        }
        let mut file = tokio::fs::File::create(tmp)
            .await
            .map_err(io("create", tmp))?;
        let mut h = Sha256::new();
        let mut total = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(PullError::Download {
                        digest: desc.digest.clone(),
                        source: std::io::Error::other(e),
                    })
                }
            };
            total += chunk.len() as u64;
            // Stop as soon as the registry sends more than it announced.
            if total > size || total > cap {
                return Err(PullError::BlobTooLarge {
                    digest: desc.digest.clone(),
                    cap: size.min(cap),
                });
            }
            // And as soon as the pull as a whole goes over its total.
            budget.left = budget.left.checked_sub(chunk.len() as u64).ok_or_else(|| {
                PullError::TotalTooLarge {
                    reference: reference.whole(),
                    cap: budget.cap,
                }
            })?;
            h.update(&chunk);
            file.write_all(&chunk).await.map_err(io("write", tmp))?;
        }
        file.flush().await.map_err(io("write", tmp))?;
        // Data on disk before the name points at it (see `crate::durable`).
        file.sync_all().await.map_err(io("sync", tmp))?;
        if total != size {
            return Err(PullError::BlobSize {
                digest: desc.digest.clone(),
                expected: size,
                actual: total,
            });
        }
        let actual: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if format!("sha256:{actual}") != desc.digest {
            return Err(PullError::BlobDigest {
                digest: desc.digest.clone(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(())
    }

    /// Remove the temporary files of downloads that never finished (a process killed
    /// between writing a blob and renaming it). Only safe while no download runs
    /// (the daemon calls it at start). Returns how many were removed.
    pub fn sweep_temps(&self) -> std::io::Result<u64> {
        let dir = self.dir.join("tmp");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for e in rd {
            let e = e?;
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Remove every blob whose digest is not in `keep` (and stale temporary files);
    /// with `dry_run`, only count them.
    pub fn prune(&self, keep: &HashSet<String>, dry_run: bool) -> Result<PruneReport, PullError> {
        let mut report = PruneReport::default();
        for sub in ["sha256", "tmp"] {
            let dir = self.dir.join(sub);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &dir)(e)),
            };
            for e in rd {
                let e = e.map_err(io("read", &dir))?;
                let name = e.file_name().to_string_lossy().to_string();
                if sub == "sha256" && keep.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let md = e.metadata().map_err(io("stat", &e.path()))?;
                report.blobs += 1;
                report.bytes += md.len();
                if !dry_run {
                    std::fs::remove_file(e.path()).map_err(io("remove", &e.path()))?;
                }
            }
        }
        Ok(report)
    }
}
