//! The root helper's own configuration: who it serves and what it may touch.
//!
//! The helper never takes the bridge, the guest subnet or the owner from a request:
//! they come from this file, which only root can write. A config that anyone else
//! could have written (not root-owned, group- or world-writable, or in such a
//! directory) is refused, because whoever writes it chooses what the helper does.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use banger_model::Subnet;
use serde::{Deserialize, Serialize};

use crate::validate;

/// Where `banger system install` writes the helper's config.
pub const DEFAULT_CONFIG: &str = "/etc/banger/helper.toml";
/// The helper's socket, unless its config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/banger-helper/helper.sock";
/// Where the helper keeps its record of the links it made. On `/run` on purpose:
/// taps die with the host, and so does the record of them.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/banger-helper";
/// The owner daemon's state directory in a system install (VM disks, images).
pub const DEFAULT_OWNER_STATE: &str = "/var/lib/banger";
/// The jailer's chroot base: root-owned, so no owner can plant a symlink in its path.
pub const DEFAULT_JAIL_ROOT: &str = "/var/lib/banger-jail";
/// Debian's nft.
pub const DEFAULT_NFT: &str = "/usr/sbin/nft";
/// The largest config file the helper reads.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Why the helper's config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("cannot read the helper config {path}: {source}; create it with `sudo banger system install` (or pass --config)")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file, or its directory, could have been written by someone other than root.
    #[error("refusing the helper config {path}: {reason}; it must be a regular file owned by root and not writable by group or others (chown root:root, chmod 0644), in a directory with the same rules")]
    Unsafe {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is larger than any sensible config.
    #[error("the helper config {0} is larger than 64 KiB; it is not a banger helper config")]
    TooLarge(PathBuf),
    /// The TOML does not parse or has unknown keys.
    #[error("the helper config {path} is invalid: {reason}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A value parses but is not acceptable.
    #[error("the helper config {path}: {field} {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key at fault.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

fn default_socket() -> PathBuf {
    DEFAULT_SOCKET.into()
}
fn default_runtime_dir() -> PathBuf {
    DEFAULT_RUNTIME_DIR.into()
}
fn default_owner_state() -> PathBuf {
    DEFAULT_OWNER_STATE.into()
}
fn default_jail_root() -> PathBuf {
    DEFAULT_JAIL_ROOT.into()
}
fn default_nft() -> PathBuf {
    DEFAULT_NFT.into()
}
fn default_bridge() -> String {
    "banger0".into()
}
fn default_subnet() -> String {
    Subnet::default().to_string()
}

/// `/etc/banger/helper.toml`.
///
/// ```toml
/// owner_uid = 1000
/// owner_gid = 1000
/// bridge = "banger0"
/// subnet = "172.30.0.0/24"
/// # optional, with these defaults:
/// socket = "/run/banger-helper/helper.sock"
/// runtime_dir = "/run/banger-helper"
/// owner_state_dir = "/var/lib/banger"
/// jail_root = "/var/lib/banger-jail"
/// nft = "/usr/sbin/nft"
/// # only for Firecracker guests:
/// firecracker = "/usr/local/bin/firecracker"
/// jailer = "/usr/local/bin/jailer"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperConfig {
    /// The one non-root user whose daemon may use the helper.
    pub owner_uid: u32,
    /// That user's primary group (the jailed Firecracker runs as owner_uid:owner_gid).
    pub owner_gid: u32,
    /// The guests' bridge; requests naming another one are refused.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The guest subnet, e.g. `172.30.0.0/24`; the bridge gets its first address.
    #[serde(default = "default_subnet")]
    pub subnet: String,
    /// The helper's socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Where the record of the helper's taps and bridges lives.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// The owner daemon's state directory: Firecracker guests may only use files
    /// below it (kernels, disks).
    #[serde(default = "default_owner_state")]
    pub owner_state_dir: PathBuf,
    /// The jailer's chroot base.
    #[serde(default = "default_jail_root")]
    pub jail_root: PathBuf,
    /// The nft program (absolute path).
    #[serde(default = "default_nft")]
    pub nft: PathBuf,
    /// The firecracker program (absolute path); without it, no jailed guests.
    #[serde(default)]
    pub firecracker: Option<PathBuf>,
    /// Firecracker's jailer (absolute path); without it, no jailed guests.
    #[serde(default)]
    pub jailer: Option<PathBuf>,
}

impl HelperConfig {
    /// A config for `owner` with every default; what `banger system install` writes.
    pub fn for_owner(owner_uid: u32, owner_gid: u32) -> HelperConfig {
        HelperConfig {
            owner_uid,
            owner_gid,
            bridge: default_bridge(),
            subnet: default_subnet(),
            socket: default_socket(),
            runtime_dir: default_runtime_dir(),
            owner_state_dir: default_owner_state(),
            jail_root: default_jail_root(),
            nft: default_nft(),
            firecracker: None,
            jailer: None,
        }
    }

    /// The parsed guest subnet (checked by [`HelperConfig::check`]).
    pub fn subnet(&self) -> Subnet {
        self.subnet.parse().unwrap_or_default()
    }

    /// Read and check `path`: root-owned, not group/world-writable, in a directory
    /// with the same properties, at most 64 KiB, valid TOML with known keys only,
    /// and values that pass [`HelperConfig::check`].
    pub fn load(path: &Path) -> Result<HelperConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let md = std::fs::metadata(dir).map_err(read_err)?;
            root_only_writable(dir, &md)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => ConfigError::Unsafe {
                    path: path.to_path_buf(),
                    reason: "it is a symlink".into(),
                },
                _ => read_err(e),
            })?;
        let md = file.metadata().map_err(read_err)?;
        if !md.is_file() {
            return Err(ConfigError::Unsafe {
                path: path.to_path_buf(),
                reason: "it is not a regular file".into(),
            });
        }
        root_only_writable(path, &md)?;
        if md.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(path.to_path_buf()));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(path.to_path_buf()));
        }
        let cfg = HelperConfig::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_path_buf(),
            reason,
        })?;
        cfg.check(path)?;
        Ok(cfg)
    }

    /// Parse TOML text (no checks beyond the schema).
    pub fn parse(text: &str) -> Result<HelperConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Render as TOML (what [`HelperConfig::load`] reads back).
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# banger's root helper (banger-helper): who it serves and what it may touch.\n\
             # Written by `banger system install`; root-owned, not writable by anyone else.\n\
             {body}"
        )
    }

    /// Check every value: a non-root owner, a bridge name banger may manage, a private
    /// /16../29 subnet, absolute plain paths.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if self.owner_uid == 0 || validate::owner_uid(self.owner_uid).is_err() {
            return Err(invalid(
                "owner_uid",
                format!(
                    "{} is not a non-root user id; the helper serves one unprivileged user (root uses banger in-process)",
                    self.owner_uid
                ),
            ));
        }
        if self.owner_gid == 0 || self.owner_gid > i32::MAX as u32 {
            return Err(invalid(
                "owner_gid",
                format!("{} is not a non-root group id", self.owner_gid),
            ));
        }
        validate::bridge_name(&self.bridge).map_err(|e| invalid("bridge", e.to_string()))?;
        let subnet: Subnet = self
            .subnet
            .parse()
            .map_err(|e| invalid("subnet", format!("{:?}: {e}", self.subnet)))?;
        if subnet.to_string() != self.subnet {
            return Err(invalid(
                "subnet",
                format!(
                    "{:?} has host bits set; give the network address ({subnet})",
                    self.subnet
                ),
            ));
        }
        validate::subnet(&subnet).map_err(|e| invalid("subnet", e.to_string()))?;
        let paths: [(&'static str, Option<&PathBuf>); 7] = [
            ("socket", Some(&self.socket)),
            ("runtime_dir", Some(&self.runtime_dir)),
            ("owner_state_dir", Some(&self.owner_state_dir)),
            ("jail_root", Some(&self.jail_root)),
            ("nft", Some(&self.nft)),
            ("firecracker", self.firecracker.as_ref()),
            ("jailer", self.jailer.as_ref()),
        ];
        for (field, p) in paths {
            if let Some(p) = p {
                if !validate::plain_absolute(p) {
                    return Err(invalid(
                        field,
                        format!(
                            "{} must be an absolute path without `.` or `..`",
                            p.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A file or directory only root can have written: owned by root, no group/other
/// write bit (a sticky world-writable directory such as /tmp is refused too).
fn root_only_writable(path: &Path, md: &std::fs::Metadata) -> Result<(), ConfigError> {
    let reason = if md.uid() != 0 {
        Some(format!("it is owned by uid {}, not root", md.uid()))
    } else if md.mode() & 0o022 != 0 {
        Some(format!(
            "its mode {:o} lets group or others write it",
            md.mode() & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::Unsafe {
            path: path.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fills_defaults() {
        let c = HelperConfig::for_owner(1000, 1000);
        let back = HelperConfig::parse(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let minimal = HelperConfig::parse("owner_uid = 1000\nowner_gid = 100\n").unwrap();
        assert_eq!(minimal.bridge, "banger0");
        assert_eq!(minimal.subnet().to_string(), "172.30.0.0/24");
        assert_eq!(minimal.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(minimal.jailer.is_none());
        minimal.check(Path::new("x")).unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(HelperConfig::parse("owner_uid = 1\nowner_gid = 1\nshell = \"sh\"\n").is_err());
        let bad = |text: &str| {
            let c = HelperConfig::parse(text).unwrap();
            c.check(Path::new("/etc/banger/helper.toml"))
                .unwrap_err()
                .to_string()
        };
        let base = "owner_gid = 1000\n";
        assert!(bad(&format!("owner_uid = 0\n{base}")).contains("owner_uid"));
        assert!(bad(&format!("owner_uid = 65534\n{base}")).contains("owner_uid"));
        let ok = "owner_uid = 1000\nowner_gid = 1000\n";
        assert!(bad(&format!("{ok}bridge = \"Docker0!\"\n")).contains("bridge"));
        assert!(bad(&format!("{ok}subnet = \"8.8.8.0/24\"\n")).contains("subnet"));
        assert!(bad(&format!("{ok}subnet = \"10.0.0.0/8\"\n")).contains("subnet"));
        assert!(bad(&format!("{ok}subnet = \"10.1.0.5/24\"\n")).contains("subnet"));
        assert!(bad(&format!("{ok}nft = \"nft\"\n")).contains("nft"));
        assert!(bad(&format!("{ok}jailer = \"/usr/bin/../bin/jailer\"\n")).contains("jailer"));
    }
}
