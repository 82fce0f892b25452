//! Edits inside an applied image tree that never follow the tree's symlinks.
//!
//! An OCI tree is attacker-controlled: `etc/ssh` may be a symlink to the host's
//! `/etc/ssh`. Path-based std::fs calls on `tree.join("etc/ssh/...")` would follow it
//! and edit (or delete) host files, as root. Customising an OCI image (banger's
//! sshd config, units, agent) must go through [`TreeEditor`], which walks with the
//! same no-follow primitives as the layer applier and refuses a symlinked ancestor.

use super::fsat::{self, dir_flags, kind_at, remove_all_at, Root, WalkError};
use super::names::RelPath;
use rustix::fs::{fchmod, mkdirat, openat, symlinkat, FileType, Mode, OFlags};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Why an edit was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The path is not a plain relative path debugfs can encode.
    #[error("{0:?} is not a plain relative path inside the image")]
    BadPath(String),
    /// An ancestor of the path is a symlink in the image.
    #[error("{path:?} lies under {ancestor:?}, a symlink in the image; refusing to follow it (use the symlink's real location)")]
    SymlinkAncestor {
        /// The path asked for.
        path: String,
        /// The symlinked ancestor.
        ancestor: String,
    },
    /// An ancestor of the path is not a directory.
    #[error("{path:?} lies under {ancestor:?}, which is not a directory in the image")]
    NotADirectory {
        /// The path asked for.
        path: String,
        /// The ancestor.
        ancestor: String,
    },
    /// A directory on the way does not exist.
    #[error("{path:?}: directory {missing:?} does not exist in the image")]
    Missing {
        /// The path asked for.
        path: String,
        /// The missing ancestor.
        missing: String,
    },
    /// The OS refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path (in the tree).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// No-follow editor of a tree rooted at a staging directory.
pub struct TreeEditor {
    root: Root,
    base: PathBuf,
}

impl TreeEditor {
    /// Edit the tree at `root`.
    pub fn open(root: &Path) -> Result<TreeEditor, TreeError> {
        let r = Root::open(root, false).map_err(|source| TreeError::Io {
            what: "open",
            path: root.into(),
            source,
        })?;
        Ok(TreeEditor {
            root: r,
            base: root.into(),
        })
    }

    fn parse(rel: &str) -> Result<RelPath, TreeError> {
        match RelPath::parse(rel.as_bytes()) {
            Ok(p) if p.file_name().is_some() => Ok(p),
            _ => Err(TreeError::BadPath(rel.into())),
        }
    }

    fn io(&self, what: &'static str, rel: &str) -> impl FnOnce(std::io::Error) -> TreeError {
        let path = self.base.join(rel);
        move |source| TreeError::Io { what, path, source }
    }

    fn walk_error(&self, rel: &str, e: WalkError) -> TreeError {
        match e {
            WalkError::Symlink(ancestor) => TreeError::SymlinkAncestor {
                path: rel.into(),
                ancestor,
            },
            WalkError::NotDir(ancestor) => TreeError::NotADirectory {
                path: rel.into(),
                ancestor,
            },
            WalkError::Missing(missing) => TreeError::Missing {
                path: rel.into(),
                missing,
            },
            WalkError::Io(k, source) => TreeError::Io {
                what: "open directory",
                path: self.base.join(k),
                source,
            },
        }
    }

    fn parent(
        &mut self,
        p: &RelPath,
        rel: &str,
        create: bool,
    ) -> Result<std::os::fd::OwnedFd, TreeError> {
        let r = self.root.dir(p.parent(), create, &mut vec![]);
        r.map_err(|e| self.walk_error(rel, e))
    }

    /// What is at `rel` (a symlink is reported as such, not followed); `None` if
    /// nothing or a directory on the way is missing.
    pub fn kind(&mut self, rel: &str) -> Result<Option<FileType>, TreeError> {
        let p = Self::parse(rel)?;
        let dir = match self.parent(&p, rel, false) {
            Ok(d) => d,
            Err(TreeError::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        kind_at(dir.as_fd(), p.file_name().unwrap_or_default()).map_err(self.io("inspect", rel))
    }

    /// Create directory `rel` and missing parents (parents 0755); set `mode` on it.
    pub fn create_dir_all(&mut self, rel: &str, mode: u32) -> Result<(), TreeError> {
        let p = Self::parse(rel)?;
        let dir = self.parent(&p, rel, true)?;
        let name = p.file_name().unwrap_or_default();
        match kind_at(dir.as_fd(), name).map_err(self.io("inspect", rel))? {
            Some(FileType::Directory) => {}
            None => mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| self.io("create", rel)(e.into()))?,
            Some(_) => {
                return Err(TreeError::NotADirectory {
                    path: rel.into(),
                    ancestor: rel.into(),
                })
            }
        }
        let fd = openat(&dir, name, dir_flags(), Mode::empty())
            .map_err(|e| self.io("open", rel)(e.into()))?;
        fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.io("chmod", rel)(e.into()))
    }

    /// Write `data` to `rel` with `mode`, replacing whatever non-directory is there
    /// (a symlink is replaced, never written through). Parents are created.
    pub fn write(&mut self, rel: &str, data: &[u8], mode: u32) -> Result<(), TreeError> {
        let p = Self::parse(rel)?;
        let dir = self.parent(&p, rel, true)?;
        let name = p.file_name().unwrap_or_default();
        if kind_at(dir.as_fd(), name).map_err(self.io("inspect", rel))? == Some(FileType::Directory)
        {
            return Err(self.io("write", rel)(
                std::io::ErrorKind::IsADirectory.into(),
            ));
        }
        remove_all_at(dir.as_fd(), name).map_err(self.io("replace", rel))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&dir, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.io("create", rel)(e.into()))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data).map_err(self.io("write", rel))?;
        fchmod(&f, Mode::from_raw_mode(mode)).map_err(|e| self.io("chmod", rel)(e.into()))
    }

    /// Make `rel` a symlink to `target` (stored verbatim), replacing a non-directory.
    pub fn symlink(&mut self, rel: &str, target: &str) -> Result<(), TreeError> {
        let p = Self::parse(rel)?;
        let dir = self.parent(&p, rel, true)?;
        let name = p.file_name().unwrap_or_default();
        if kind_at(dir.as_fd(), name).map_err(self.io("inspect", rel))? == Some(FileType::Directory)
        {
            return Err(self.io("symlink", rel)(
                std::io::ErrorKind::IsADirectory.into(),
            ));
        }
        remove_all_at(dir.as_fd(), name).map_err(self.io("replace", rel))?;
        symlinkat(target, &dir, name).map_err(|e| self.io("symlink", rel)(e.into()))
    }

    /// Remove `rel` (recursively; a symlink itself, never its target). Returns whether
    /// something was there.
    pub fn remove(&mut self, rel: &str) -> Result<bool, TreeError> {
        let p = Self::parse(rel)?;
        let dir = match self.parent(&p, rel, false) {
            Ok(d) => d,
            Err(TreeError::Missing { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let was = remove_all_at(dir.as_fd(), p.file_name().unwrap_or_default())
            .map_err(self.io("remove", rel))?;
        if was == Some(FileType::Directory) {
            self.root.invalidate();
        }
        Ok(was.is_some())
    }

    /// Names in directory `rel` (`""` for the root); empty if it does not exist.
    pub fn list(&mut self, rel: &str) -> Result<Vec<String>, TreeError> {
        let p = RelPath::parse(rel.as_bytes()).map_err(|_| TreeError::BadPath(rel.into()))?;
        let fd = match self.root.dir(p.comps(), false, &mut vec![]) {
            Ok(fd) => fd,
            Err(WalkError::Missing(_)) => return Ok(vec![]),
            Err(e) => return Err(self.walk_error(rel, e)),
        };
        let names = fsat::list(fd.as_fd()).map_err(self.io("list", rel))?;
        Ok(names
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_inside_and_never_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let host = t.path().join("host-etc-ssh");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("ssh_host_rsa_key"), "host secret").unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc/ssh")).unwrap();
        std::os::unix::fs::symlink(host.join("ssh_host_rsa_key"), root.join("etc/hostname"))
            .unwrap();
        let mut e = TreeEditor::open(&root).unwrap();
        assert!(matches!(
            e.write("etc/ssh/sshd_config.d/banger.conf", b"x", 0o644),
            Err(TreeError::SymlinkAncestor { .. })
        ));
        assert!(matches!(
            e.remove("etc/ssh/ssh_host_rsa_key"),
            Err(TreeError::SymlinkAncestor { .. })
        ));
        assert!(matches!(
            e.list("etc/ssh"),
            Err(TreeError::SymlinkAncestor { .. })
        ));
        // Writing over a symlink replaces the link, not its target.
        e.write("etc/hostname", b"banger\n", 0o644).unwrap();
        assert_eq!(
            std::fs::read(host.join("ssh_host_rsa_key")).unwrap(),
            b"host secret"
        );
        assert_eq!(
            std::fs::read(root.join("etc/hostname")).unwrap(),
            b"banger\n"
        );
        // Ordinary edits work.
        e.create_dir_all("etc/systemd/system/sysinit.target.wants", 0o755)
            .unwrap();
        e.symlink("etc/systemd/system/fstrim.timer", "/dev/null")
            .unwrap();
        assert_eq!(
            e.kind("etc/systemd/system/fstrim.timer").unwrap(),
            Some(FileType::Symlink)
        );
        assert_eq!(e.kind("etc/ssh").unwrap(), Some(FileType::Symlink));
        assert_eq!(e.kind("nope/x").unwrap(), None);
        assert!(e.remove("etc/ssh").unwrap());
        assert!(host.join("ssh_host_rsa_key").exists());
        assert_eq!(e.list("etc/systemd").unwrap(), ["system"]);
        assert!(matches!(
            e.write("../x", b"", 0o644),
            Err(TreeError::BadPath(_))
        ));
    }
}
