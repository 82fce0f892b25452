//! Where a system install puts everything (the layout in the team brief, also what
//! `banger update` and the release tarball use).

use std::path::{Path, PathBuf};

/// Every path of a system install. [`SystemLayout::default`] is the real one;
/// [`SystemLayout::under`] moves all of it below a root directory, for tests
/// (`BANGER_SYSTEM_ROOT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemLayout {
    /// `/` normally; the test root otherwise.
    pub root: PathBuf,
}

impl Default for SystemLayout {
    fn default() -> Self {
        SystemLayout { root: "/".into() }
    }
}

/// The three binaries a system install puts in [`SystemLayout::bin_dir`].
pub const BINARIES: [&str; 3] = ["banger", "bangerd", "banger-helper"];
/// The helper's unit.
pub const HELPER_UNIT: &str = "bangerd-root.service";
/// The owner daemon's unit.
pub const DAEMON_UNIT: &str = "bangerd.service";

impl SystemLayout {
    /// Everything below `root` (tests).
    pub fn under(root: &Path) -> SystemLayout {
        SystemLayout { root: root.into() }
    }

    /// `BANGER_SYSTEM_ROOT` when set (tests), else the real layout.
    pub fn from_env() -> SystemLayout {
        match std::env::var_os("BANGER_SYSTEM_ROOT").filter(|v| !v.is_empty()) {
            Some(r) => SystemLayout::under(Path::new(&r)),
            None => SystemLayout::default(),
        }
    }

    fn p(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// `/usr/local/bin`: banger, bangerd, banger-helper.
    pub fn bin_dir(&self) -> PathBuf {
        self.p("/usr/local/bin")
    }
    /// One of [`BINARIES`].
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }
    /// `/usr/local/lib/banger/banger-agent`.
    pub fn agent(&self) -> PathBuf {
        self.p("/usr/local/lib/banger/banger-agent")
    }
    /// `/usr/local/share/man/man1`.
    pub fn man_dir(&self) -> PathBuf {
        self.p("/usr/local/share/man/man1")
    }
    /// bash completion file.
    pub fn bash_completion(&self) -> PathBuf {
        self.p("/usr/local/share/bash-completion/completions/banger")
    }
    /// zsh completion file.
    pub fn zsh_completion(&self) -> PathBuf {
        self.p("/usr/local/share/zsh/site-functions/_banger")
    }
    /// fish completion file.
    pub fn fish_completion(&self) -> PathBuf {
        self.p("/usr/local/share/fish/vendor_completions.d/banger.fish")
    }
    /// `/etc/systemd/system`.
    pub fn unit_dir(&self) -> PathBuf {
        self.p("/etc/systemd/system")
    }
    /// A unit file.
    pub fn unit(&self, name: &str) -> PathBuf {
        self.unit_dir().join(name)
    }
    /// `/etc/banger`.
    pub fn etc_dir(&self) -> PathBuf {
        self.p("/etc/banger")
    }
    /// The root helper's config.
    pub fn helper_config(&self) -> PathBuf {
        self.etc_dir().join("helper.toml")
    }
    /// The install record.
    pub fn install_record(&self) -> PathBuf {
        self.etc_dir().join("install.toml")
    }
    /// The owner daemon's state (`XDG_STATE_HOME=/var/lib` → `/var/lib/banger`).
    pub fn state_dir(&self) -> PathBuf {
        self.p("/var/lib/banger")
    }
    /// The owner daemon's cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.p("/var/cache/banger")
    }
    /// The owner daemon's runtime directory.
    pub fn runtime_dir(&self) -> PathBuf {
        self.p("/run/banger")
    }
    /// The owner daemon's socket.
    pub fn daemon_socket(&self) -> PathBuf {
        self.runtime_dir().join("bangerd.sock")
    }
    /// The helper's runtime directory (socket and link record).
    pub fn helper_runtime_dir(&self) -> PathBuf {
        self.p("/run/banger-helper")
    }
    /// The helper's socket.
    pub fn helper_socket(&self) -> PathBuf {
        self.helper_runtime_dir().join("helper.sock")
    }
    /// The jailer's chroot base.
    pub fn jail_root(&self) -> PathBuf {
        self.p("/var/lib/banger-jail")
    }
    /// The environment that makes `bangerd` (through `model::Layout::from_env`'s XDG
    /// rules) use this layout's state, cache and runtime directories, and tells it
    /// where the helper and the installed agent are.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        let s = |p: PathBuf| p.display().to_string();
        vec![
            ("XDG_STATE_HOME".into(), s(self.p("/var/lib"))),
            ("XDG_CACHE_HOME".into(), s(self.p("/var/cache"))),
            ("XDG_RUNTIME_DIR".into(), s(self.p("/run"))),
            (
                banger_helper::HELPER_SOCKET_ENV.into(),
                s(self.helper_socket()),
            ),
            ("BANGER_AGENT".into(), s(self.agent())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_and_test_layouts() {
        let l = SystemLayout::default();
        assert_eq!(l.binary("bangerd"), Path::new("/usr/local/bin/bangerd"));
        assert_eq!(l.daemon_socket(), Path::new("/run/banger/bangerd.sock"));
        assert_eq!(
            l.helper_socket(),
            Path::new("/run/banger-helper/helper.sock")
        );
        assert_eq!(
            l.helper_socket(),
            Path::new(banger_helper::config::DEFAULT_SOCKET)
        );
        assert_eq!(
            l.jail_root(),
            Path::new(banger_helper::config::DEFAULT_JAIL_ROOT)
        );
        assert_eq!(
            l.state_dir(),
            Path::new(banger_helper::config::DEFAULT_OWNER_STATE)
        );
        let t = SystemLayout::under(Path::new("/tmp/x"));
        assert_eq!(
            t.unit(DAEMON_UNIT),
            Path::new("/tmp/x/etc/systemd/system/bangerd.service")
        );
        assert!(t
            .daemon_env()
            .contains(&("XDG_RUNTIME_DIR".into(), "/tmp/x/run".into())));
    }
}
