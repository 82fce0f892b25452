//! Every path banger touches comes from one [`Layout`], so tests can point the whole
//! system at a temp dir with one environment variable (`BANGER_HOME`).

use std::path::{Path, PathBuf};

/// Where state, cache and runtime files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Durable state: database, images, VM disks.
    pub state: PathBuf,
    /// Re-creatable downloads and build caches.
    pub cache: PathBuf,
    /// Sockets, pid files, console logs: gone after a host reboot.
    pub runtime: PathBuf,
}

impl Layout {
    /// Everything under one root directory (tests, `BANGER_HOME`).
    pub fn under(root: &Path) -> Self {
        Self {
            state: root.join("state"),
            cache: root.join("cache"),
            runtime: root.join("run"),
        }
    }

    /// Resolve from the environment: `BANGER_HOME` wins; otherwise XDG base
    /// directories; root without XDG variables gets the system paths.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(home) = var("BANGER_HOME") {
            return Self::under(&home);
        }
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        let is_root = nix_like_getuid() == 0;
        let state = var("XDG_STATE_HOME")
            .map(|p| p.join("banger"))
            .unwrap_or_else(|| {
                if is_root {
                    PathBuf::from("/var/lib/banger")
                } else {
                    home.join(".local/state/banger")
                }
            });
        let cache = var("XDG_CACHE_HOME")
            .map(|p| p.join("banger"))
            .unwrap_or_else(|| {
                if is_root {
                    PathBuf::from("/var/cache/banger")
                } else {
                    home.join(".cache/banger")
                }
            });
        let runtime = var("XDG_RUNTIME_DIR")
            .map(|p| p.join("banger"))
            .unwrap_or_else(|| {
                if is_root {
                    PathBuf::from("/run/banger")
                } else {
                    state.join("run")
                }
            });
        Self {
            state,
            cache,
            runtime,
        }
    }

    /// The system install's layout (`banger system install`: `bangerd.service` runs with
    /// `XDG_*` pointing here).
    pub fn system() -> Self {
        Self {
            state: PathBuf::from(SYSTEM_STATE),
            cache: PathBuf::from(SYSTEM_CACHE),
            runtime: PathBuf::from(SYSTEM_RUNTIME),
        }
    }

    /// The layout a client (the CLI) uses: the system daemon's when a system install's
    /// daemon answers for this user, else [`Layout::from_env`]. So the owner of a
    /// system install (and root) reach `bangerd.service` without setting anything,
    /// instead of starting a daemon of their own that has no helper. `BANGER_HOME` or
    /// `XDG_STATE_HOME` mean the user chose a layout: they win.
    pub fn for_client() -> Self {
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        let socket = Path::new(SYSTEM_RUNTIME).join("bangerd.sock");
        let found = std::fs::symlink_metadata(&socket).ok().map(|md| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            (md.file_type().is_socket(), md.uid())
        });
        if use_system_layout(
            set("BANGER_HOME") || set("XDG_STATE_HOME"),
            found,
            nix_like_getuid(),
        ) {
            Self::system()
        } else {
            Self::from_env()
        }
    }

    /// The SQLite database.
    pub fn db(&self) -> PathBuf {
        self.state.join("banger.db")
    }
    /// The cached KVM/TCG verdict for this host boot (written by the daemon, read by
    /// `banger doctor`; format in banger-hostcheck's `accel` module).
    pub fn accel_cache(&self) -> PathBuf {
        self.runtime.join("accel.json")
    }
    /// The daemon's RPC socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("bangerd.sock")
    }
    /// The daemon's log file when auto-started by the CLI.
    pub fn daemon_log(&self) -> PathBuf {
        self.state.join("bangerd.log")
    }
    /// banger's own ssh key pair (private key; `.pub` beside it).
    pub fn ssh_key(&self) -> PathBuf {
        self.state.join("ssh/id_ed25519")
    }
    /// The ssh_config file the daemon keeps for `Host *.vm` (`banger ssh-config
    /// install` includes it from `~/.ssh/config`).
    pub fn ssh_config(&self) -> PathBuf {
        self.state.join("ssh/config")
    }
    /// The known_hosts file pinning every VM's host key (the daemon keeps it).
    pub fn known_hosts(&self) -> PathBuf {
        self.state.join("ssh/known_hosts")
    }
    /// A published image's directory.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.state.join("images").join(id)
    }
    /// Scratch space for image builds (same filesystem as images, so publish is a rename).
    pub fn image_staging(&self) -> PathBuf {
        self.state.join("images/.staging")
    }
    /// A kernel's directory in the kernel store.
    pub fn kernel_dir(&self, id: &str) -> PathBuf {
        self.state.join("kernels").join(id)
    }
    /// Scratch space for kernel imports (same filesystem, so publish is a rename).
    pub fn kernel_staging(&self) -> PathBuf {
        self.state.join("kernels/.staging")
    }
    /// Downloaded blobs (OCI layers, catalog artifacts), content-addressed.
    pub fn blob_cache(&self) -> PathBuf {
        self.cache.join("blobs")
    }
    /// Warm snapshots (`warm/<image id>/<shape>/`), the daemon's alone (0700).
    pub fn warm_dir(&self) -> PathBuf {
        self.state.join("warm")
    }
    /// A VM's durable directory (disks, pinned host key).
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.state.join("vms").join(id)
    }
    /// A VM's runtime directory (sockets, pid file, console log).
    pub fn vm_runtime(&self, id: &str) -> PathBuf {
        self.runtime.join("vms").join(id)
    }
}

/// State directory of a system install.
pub const SYSTEM_STATE: &str = "/var/lib/banger";
/// Cache directory of a system install.
pub const SYSTEM_CACHE: &str = "/var/cache/banger";
/// Runtime directory of a system install (the daemon's socket is in it).
pub const SYSTEM_RUNTIME: &str = "/run/banger";

/// [`Layout::for_client`]'s rule: no layout chosen by the environment, and the system
/// socket exists, is a socket, and is the caller's (or the caller is root, whom the
/// daemon also serves; the CLI then talks to it only when it is the system install's
/// recorded owner's).
fn use_system_layout(chosen: bool, socket: Option<(bool, u32)>, me: u32) -> bool {
    match socket {
        Some((true, owner)) => !chosen && (owner == me || me == 0),
        _ => false,
    }
}

fn nix_like_getuid() -> u32 {
    // Reading /proc/self/status avoids a libc dependency in the model crate.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_root_puts_everything_inside() {
        let l = Layout::under(Path::new("/tmp/x"));
        for p in [l.db(), l.socket(), l.vm_dir("ab"), l.image_dir("cd")] {
            assert!(p.starts_with("/tmp/x"), "{}", p.display());
        }
    }

    #[test]
    fn clients_use_the_system_daemon_when_it_is_theirs() {
        assert_eq!(
            Layout::system().socket(),
            Path::new("/run/banger/bangerd.sock")
        );
        // The owner's socket, nothing chosen: the system layout.
        assert!(use_system_layout(false, Some((true, 1000)), 1000));
        // Root is served by every daemon.
        assert!(use_system_layout(false, Some((true, 1000)), 0));
        // BANGER_HOME or XDG_STATE_HOME set: the user's choice wins.
        assert!(!use_system_layout(true, Some((true, 1000)), 1000));
        // Someone else's daemon, no socket, or not a socket: the user's own layout.
        assert!(!use_system_layout(false, Some((true, 1000)), 1001));
        assert!(!use_system_layout(false, None, 1000));
        assert!(!use_system_layout(false, Some((false, 1000)), 1000));
    }
}
