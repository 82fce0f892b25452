//! The helper's record of the links it made, so it never touches anyone else's.
//!
//! One JSON file in the helper's runtime directory (`/run/banger-helper/links.json`:
//! links do not survive a reboot, and neither does their record), replaced
//! atomically (temporary file, fsync, rename, fsync of the directory) after every
//! change, so a `kill -9` at any moment leaves either the old or the new record.
//!
//! A tap is recorded *before* it is created (without an interface index) and
//! completed after: a helper killed in between finds, on restart, an unfinished
//! record next to a tap of that name owned by the recorded user, and adopts it,
//! rather than treating its own tap as foreign.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::HelperError;

/// The record file's name inside the runtime directory.
pub const RECORD_FILE: &str = "links.json";
/// The largest record file the helper reads (thousands of taps fit).
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// A tap the helper made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapRecord {
    /// Interface name (`bgr...`).
    pub name: String,
    /// The uid the tap belongs to (the caller that asked for it).
    pub owner_uid: u32,
    /// Interface index once created; `None` while the creation is under way.
    pub ifindex: Option<u32>,
    /// When it was recorded (seconds since the epoch).
    pub created_unix: u64,
}

/// A bridge the helper made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeRecord {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
}

/// Everything recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// Taps by name.
    #[serde(default)]
    pub taps: BTreeMap<String, TapRecord>,
    /// Bridges by name.
    #[serde(default)]
    pub bridges: BTreeMap<String, BridgeRecord>,
}

/// The record on disk and in memory.
#[derive(Debug)]
pub struct Book {
    path: PathBuf,
    /// The current record.
    pub links: Links,
}

fn rec_err(path: &Path) -> impl Fn(std::io::Error) -> HelperError {
    let path = path.to_path_buf();
    move |source| HelperError::Records {
        path: path.clone(),
        source,
    }
}

impl Book {
    /// Open (or start) the record in `runtime_dir`, creating the directory (0755,
    /// root) if needed. A record that is not a root-owned regular file, or does not
    /// parse, is refused: the helper would otherwise trust links it cannot vouch for.
    pub fn open(runtime_dir: &Path) -> Result<Book, HelperError> {
        let path = runtime_dir.join(RECORD_FILE);
        let err = rec_err(&path);
        crate::server::create_public_dir(runtime_dir).map_err(&err)?;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Book {
                    path,
                    links: Links::default(),
                })
            }
            Err(e) => return Err(err(e)),
        };
        let md = file.metadata().map_err(&err)?;
        // Root in production; the helper's own user when a test runs it unprivileged.
        let me = nix::unistd::geteuid().as_raw();
        if !md.is_file() || md.uid() != me || md.mode() & 0o022 != 0 {
            return Err(err(std::io::Error::other(
                "not a regular file owned by the helper's user that only it can write",
            )));
        }
        let mut text = String::new();
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(&err)?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(err(std::io::Error::other("larger than 4 MiB")));
        }
        let links = serde_json::from_str(&text)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Ok(Book { path, links })
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the current record atomically and durably.
    pub fn save(&self) -> Result<(), HelperError> {
        let err = rec_err(&self.path);
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let tmp = dir.join(format!(".{RECORD_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let json =
            serde_json::to_vec_pretty(&self.links).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(&err)?;
        let written = f.write_all(&json).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(&err)
    }
}

/// Seconds since the epoch, for records.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Book::open(d.path()).unwrap();
        assert!(b.links.taps.is_empty());
        b.links.taps.insert(
            "bgr1".into(),
            TapRecord {
                name: "bgr1".into(),
                owner_uid: 1000,
                ifindex: Some(7),
                created_unix: 1,
            },
        );
        b.save().unwrap();
        let again = Book::open(d.path()).unwrap();
        assert_eq!(again.links, b.links);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [RECORD_FILE]);
    }

    #[test]
    fn refuses_garbage_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(RECORD_FILE), b"{not json").unwrap();
        assert!(matches!(
            Book::open(d.path()),
            Err(HelperError::Records { .. })
        ));
        std::fs::remove_file(d.path().join(RECORD_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join(RECORD_FILE)).unwrap();
        assert!(matches!(
            Book::open(d.path()),
            Err(HelperError::Records { .. })
        ));
    }
}
