//! Where release files are installed: one directory (binaries and agent side by side,
//! the daemon started by the CLI), or the system layout of `banger system install`.

use crate::contents::FileKind;
use std::path::{Path, PathBuf};

/// The install record of a system install.
pub const INSTALL_RECORD: &str = "etc/banger/install.toml";

/// Where banger is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// Binaries and `banger-agent` in one directory; man pages and completions are not
    /// installed (there is no place for them that is ours).
    Dir(PathBuf),
    /// `banger system install`'s layout under `root` (`/` on a real host; a temporary
    /// directory in tests): `usr/local/bin`, `usr/local/lib/banger`, man pages and
    /// completions where distributions look for them.
    System {
        /// The file system root the layout lives under.
        root: PathBuf,
    },
}

impl Install {
    /// The system install on this host.
    pub fn system() -> Self {
        Install::System {
            root: PathBuf::from("/"),
        }
    }

    /// Where a release file of `kind` goes, or `None` when this install has no place
    /// for it.
    pub fn dest(&self, kind: &FileKind) -> Option<PathBuf> {
        match self {
            Install::Dir(d) => match kind {
                FileKind::Binary(n) => Some(d.join(n)),
                FileKind::Agent => Some(d.join("banger-agent")),
                FileKind::ManPage(_) | FileKind::Completion(_) => None,
            },
            Install::System { root } => Some(match kind {
                FileKind::Binary(n) => root.join("usr/local/bin").join(n),
                FileKind::Agent => root.join("usr/local/lib/banger/banger-agent"),
                FileKind::ManPage(p) => root.join("usr/local/share/man/man1").join(p),
                FileKind::Completion(c) => match c.as_str() {
                    "banger.bash" => {
                        root.join("usr/local/share/bash-completion/completions/banger")
                    }
                    "_banger" => root.join("usr/local/share/zsh/site-functions/_banger"),
                    _ => root.join("usr/local/share/fish/vendor_completions.d/banger.fish"),
                },
            }),
        }
    }

    /// An installed binary (`banger`, `bangerd`, `banger-helper`).
    pub fn binary(&self, name: &str) -> PathBuf {
        match self.dest(&FileKind::Binary(name.into())) {
            Some(p) => p,
            None => PathBuf::from(name),
        }
    }

    /// Where the staging directory goes: beside the binaries, so a release is
    /// unpacked on the file system it is installed to (renames, not copies).
    pub fn staging_parent(&self) -> PathBuf {
        match self {
            Install::Dir(d) => d.clone(),
            Install::System { root } => root.join("usr/local/lib/banger"),
        }
    }

    /// The install record (system installs only).
    pub fn record(&self) -> Option<PathBuf> {
        match self {
            Install::Dir(_) => None,
            Install::System { root } => Some(root.join(INSTALL_RECORD)),
        }
    }

    /// The directory the CLI lives in.
    pub fn bin_dir(&self) -> PathBuf {
        self.binary("banger")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let d = Install::Dir("/opt/b".into());
        assert_eq!(
            d.dest(&FileKind::Agent).unwrap(),
            Path::new("/opt/b/banger-agent")
        );
        assert_eq!(d.dest(&FileKind::ManPage("banger.1".into())), None);
        assert_eq!(d.record(), None);
        let s = Install::system();
        assert_eq!(s.binary("bangerd"), Path::new("/usr/local/bin/bangerd"));
        assert_eq!(
            s.dest(&FileKind::Agent).unwrap(),
            Path::new("/usr/local/lib/banger/banger-agent")
        );
        assert_eq!(
            s.dest(&FileKind::Completion("_banger".into())).unwrap(),
            Path::new("/usr/local/share/zsh/site-functions/_banger")
        );
        assert_eq!(
            s.dest(&FileKind::Completion("banger.bash".into())).unwrap(),
            Path::new("/usr/local/share/bash-completion/completions/banger")
        );
        assert_eq!(
            s.dest(&FileKind::Completion("banger.fish".into())).unwrap(),
            Path::new("/usr/local/share/fish/vendor_completions.d/banger.fish")
        );
        assert_eq!(
            s.dest(&FileKind::ManPage("banger-vm.1".into())).unwrap(),
            Path::new("/usr/local/share/man/man1/banger-vm.1")
        );
        assert_eq!(s.record().unwrap(), Path::new("/etc/banger/install.toml"));
    }
}
