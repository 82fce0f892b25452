//! The install record of a system install, `/etc/banger/install.toml`: which build is
//! installed and for which owner. `banger system install` (issue 11) writes it first;
//! `banger update` rewrites it with the identity the *new* binaries report (the Go
//! banger once recorded the old binary's commit after an update, and doctor then
//! warned about drift forever). Keys this updater does not know are kept.

use banger_buildinfo::BuildInfo;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest record we read.
const MAX_RECORD: u64 = 64 << 10;

/// What went wrong with the record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The record.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a regular file, too large, or not TOML.
    #[error("{path} is not a valid install record: {reason}; rerun `sudo banger system install` to rewrite it")]
    Invalid {
        /// The record.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A parsed install record.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallRecord {
    table: toml::Table,
}

impl InstallRecord {
    /// A new record.
    pub fn new(build: &BuildInfo, owner: &str) -> Self {
        let mut r = Self {
            table: toml::Table::new(),
        };
        r.set_build(build);
        r.table.insert("owner".into(), owner.into());
        r
    }

    /// Read `path` (no symlinks, at most 64 KiB).
    pub fn read(path: &Path) -> Result<Self, RecordError> {
        let invalid = |reason: String| RecordError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|source| RecordError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let md = f.metadata().map_err(|source| RecordError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if !md.is_file() || md.len() > MAX_RECORD {
            return Err(invalid("not a regular file of at most 64 KiB".into()));
        }
        let mut text = String::new();
        f.take(MAX_RECORD)
            .read_to_string(&mut text)
            .map_err(|e| invalid(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        Ok(Self { table })
    }

    /// The owner the system daemon runs as.
    pub fn owner(&self) -> Option<&str> {
        self.table.get("owner").and_then(|v| v.as_str())
    }

    /// The recorded build (fields missing from an older record are empty).
    pub fn build(&self) -> BuildInfo {
        let s = |k: &str| {
            self.table
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        BuildInfo {
            version: s("version"),
            commit: s("commit"),
            built_at: s("built_at"),
            target: s("target"),
        }
    }

    /// Record `build` as installed (other keys are kept).
    pub fn set_build(&mut self, build: &BuildInfo) {
        for (k, v) in [
            ("version", &build.version),
            ("commit", &build.commit),
            ("built_at", &build.built_at),
            ("target", &build.target),
        ] {
            self.table.insert(k.into(), v.as_str().into());
        }
    }

    /// Write atomically: a 0644 temporary file beside `path`, fsync, rename, fsync the
    /// directory.
    pub fn write(&self, path: &Path) -> Result<(), RecordError> {
        let ioe = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = toml::to_string(&self.table).map_err(|e| RecordError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(ioe)?;
        let tmp = dir.join(".install.toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(ioe)?;
        f.write_all(b"# Written by banger system install and banger update. Do not edit.\n")
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(ioe)?;
        std::fs::rename(&tmp, path).map_err(ioe)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(ioe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(c: &str) -> BuildInfo {
        BuildInfo {
            version: "1.0.0".into(),
            commit: c.into(),
            built_at: "2025-01-01T00:00:00Z".into(),
            target: "x86_64-unknown-linux-gnu".into(),
        }
    }

    #[test]
    fn round_trip_keeps_unknown_keys() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("etc/banger/install.toml");
        InstallRecord::new(&build("aaaaaaa"), "alice")
            .write(&p)
            .unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("helper_socket = \"/run/banger-helper/helper.sock\"\n");
        std::fs::write(&p, text).unwrap();
        let mut r = InstallRecord::read(&p).unwrap();
        assert_eq!(r.owner(), Some("alice"));
        assert_eq!(r.build().commit, "aaaaaaa");
        r.set_build(&build("bbbbbbb"));
        r.write(&p).unwrap();
        let r = InstallRecord::read(&p).unwrap();
        assert_eq!(r.build(), build("bbbbbbb"));
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("helper_socket"));
    }

    #[test]
    fn refuses_symlinks_and_garbage() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real.toml");
        std::fs::write(&real, "owner = \"x\"\n").unwrap();
        let link = t.path().join("install.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(InstallRecord::read(&link).is_err());
        std::fs::write(&real, "owner = [").unwrap();
        assert!(matches!(
            InstallRecord::read(&real),
            Err(RecordError::Invalid { .. })
        ));
    }
}
