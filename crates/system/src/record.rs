//! The install record, `/etc/banger/install.toml`: what is installed, from which
//! build, for whom. `banger system install` writes it; `banger update` reads it to
//! know what it replaces and writes it again after a swap; `banger doctor` and
//! `banger system status` show it.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::SystemError;

/// The largest install record read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// What is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// banger's version, e.g. `0.1.0`.
    pub version: String,
    /// The commit it was built from (`unknown` for builds outside a release).
    pub commit: String,
    /// When it was built (RFC 3339, or `unknown`).
    pub built_at: String,
    /// The owner's login name.
    pub owner: String,
}

impl InstallRecord {
    /// The record of this build for `owner`: the version of the calling crate and the
    /// `BANGER_COMMIT` / `BANGER_BUILT_AT` a release build sets at compile time.
    pub fn for_this_build(version: &str, owner: &str) -> InstallRecord {
        InstallRecord {
            version: version.to_string(),
            commit: option_env!("BANGER_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            built_at: option_env!("BANGER_BUILT_AT")
                .unwrap_or("unknown")
                .to_string(),
            owner: owner.to_string(),
        }
    }

    /// Read the record at `path`; `Ok(None)` when there is none (not installed).
    pub fn read(path: &Path) -> Result<Option<InstallRecord>, SystemError> {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", path)(e)),
        };
        let mut text = String::new();
        f.take(MAX_RECORD_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io("read", path))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(SystemError::BadFile {
                path: path.into(),
                reason: "larger than 64 KiB".into(),
            });
        }
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| SystemError::BadFile {
                path: path.into(),
                reason: e.to_string(),
            })
    }

    /// Write the record to `path` atomically (temporary file, fsync, rename, fsync of
    /// the directory), mode 0644, creating its directory (0755) if needed.
    pub fn write(&self, path: &Path) -> Result<(), SystemError> {
        let body = toml::to_string(self).map_err(|e| SystemError::BadFile {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let text = format!("# Written by `banger system install` and `banger update`.\n{body}");
        write_atomic(path, text.as_bytes(), 0o644)
    }
}

/// Replace `path` with `bytes` atomically and durably, with `mode`, creating the
/// directory (0755) if needed. The temporary file sits beside `path` (same
/// filesystem, so the rename is atomic).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SystemError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    crate::files::create_dir_0755(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask narrowed the creation mode.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/banger/install.toml");
        assert_eq!(InstallRecord::read(&p).unwrap(), None);
        let r = InstallRecord::for_this_build("0.1.0", "alice");
        r.write(&p).unwrap();
        assert_eq!(InstallRecord::read(&p).unwrap(), Some(r));
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o644);
        std::fs::write(&p, "version = 3\n").unwrap();
        assert!(matches!(
            InstallRecord::read(&p),
            Err(SystemError::BadFile { .. })
        ));
        std::fs::write(
            &p,
            "version=\"1\"\ncommit=\"x\"\nbuilt_at=\"y\"\nowner=\"z\"\nextra=1\n",
        )
        .unwrap();
        assert!(InstallRecord::read(&p).is_err(), "unknown keys are refused");
    }
}
