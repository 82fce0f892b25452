//! KVM or TCG: the verdict's types and its cache file.
//!
//! The daemon decides by booting a probe guest (banger-vmm's `accel::choose`), which
//! takes seconds, so the verdict is cached in `accel.json` in the runtime directory,
//! keyed by the host's boot id and the probed kernel. `banger doctor` reads the same
//! file to say what the daemon will use; both go through this module.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The device KVM is reached through.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Largest cache file read (a verdict is a few hundred bytes).
const MAX_CACHE: u64 = 64 * 1024;

/// Hardware-assisted or software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM: near-native speed.
    Kvm,
    /// QEMU's TCG software emulation: works everywhere, several times slower.
    Tcg,
}

impl Accel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    /// `kvm` or `tcg` (the values of `BANGER_ACCEL`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("{other:?} is neither kvm nor tcg")),
        }
    }
}

/// The decision and why, for logs, `doctor` and the one-line CLI notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// What to use.
    pub accel: Accel,
    /// Why, in a sentence a user can act on.
    pub reason: String,
}

/// The contents of `accel.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `boot_id|kernel path|kernel size`: the verdict holds for this boot and kernel.
    pub key: String,
    /// What was decided.
    pub choice: AccelChoice,
}

impl Verdict {
    /// The boot id the verdict was made in.
    pub fn boot_id(&self) -> &str {
        self.key.split('|').next().unwrap_or_default()
    }
}

/// Why the cache file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// It exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is not a verdict.
    #[error("{path} is not a valid verdict: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// This host boot's id (empty when unknown: then no cached verdict ever matches).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The cache key for probing `kernel` in the boot `boot_id`.
pub fn cache_key(boot_id: &str, kernel: &Path) -> String {
    let size = std::fs::metadata(kernel).map(|m| m.len()).unwrap_or(0);
    format!("{}|{}|{size}", boot_id.trim(), kernel.display())
}

/// Read the cache file: `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<Verdict>, CacheError> {
    let shown = path.display().to_string();
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                path: shown,
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    f.take(MAX_CACHE)
        .read_to_end(&mut bytes)
        .map_err(|source| CacheError::Read {
            path: shown.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CacheError::Invalid {
            path: shown,
            reason: e.to_string(),
        })
}

/// Write the cache file atomically (a temporary file renamed over it).
pub fn write(path: &Path, v: &Verdict) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Whether `/dev/kvm` opens read-write for this process (the precondition for even
/// trying KVM).
pub fn open_kvm() -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("accel.json");
        assert!(read(&p).unwrap().is_none());
        let v = Verdict {
            key: cache_key("boot-1", Path::new("/nonexistent/vmlinuz")),
            choice: AccelChoice {
                accel: Accel::Tcg,
                reason: "because".into(),
            },
        };
        write(&p, &v).unwrap();
        let back = read(&p).unwrap().unwrap();
        assert_eq!(back, v);
        assert_eq!(back.boot_id(), "boot-1");
        // The on-disk format other banger versions read.
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(json["choice"]["accel"], "tcg");
        std::fs::write(&p, "{not json").unwrap();
        assert!(matches!(read(&p), Err(CacheError::Invalid { .. })));
    }

    #[test]
    fn accel_names() {
        assert_eq!("kvm".parse::<Accel>(), Ok(Accel::Kvm));
        assert_eq!(" tcg ".parse::<Accel>(), Ok(Accel::Tcg));
        assert!("hvf".parse::<Accel>().is_err());
    }
}
