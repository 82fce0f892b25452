//! An applied tree → `rootfs.ext4`, without mounting.
//!
//! `mkfs.ext4 -d` copies the tree (contents, modes, hardlinks, symlinks, times, and
//! when we ran as root, owners, device nodes and xattrs). It copies host owners
//! verbatim and ignores the root directory's metadata, so a debugfs pass follows:
//! the root directory's owner and mode, then, for an unprivileged apply, every
//! recorded owner/mode/device/xattr, and root ownership for every path not recorded
//! (those are owned by the unprivileged builder on the host).

use super::apply::AppliedTree;
use super::debugfs::Script;
use super::names::{acceptable, encodable, guest_path, join_key};
use crate::ext4::{self, Ext4Error};
use crate::run::ToolError;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why the ext4 image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// mkfs.ext4 failed.
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
    /// debugfs is missing or could not run.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// debugfs reported failures.
    #[error("debugfs could not write owners and device nodes into {image}: {errors}")]
    Debugfs {
        /// The image.
        image: PathBuf,
        /// Its error lines.
        errors: String,
    },
    /// A path in the tree cannot be named in a debugfs script (only possible for
    /// files added after the layers were applied: applied names are checked).
    #[error("path {0:?} has whitespace, quotes or control characters that debugfs cannot encode; rename it")]
    Unencodable(String),
    /// Reading the tree or writing a helper file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`build_rootfs`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsInfo {
    /// Apparent size of the ext4 file.
    pub size_bytes: u64,
    /// Inodes in the tree (including record-only device nodes).
    pub inodes: u64,
    /// debugfs commands run.
    pub debugfs_commands: usize,
}

/// Totals over the host tree, and the paths whose host owner must become root.
#[derive(Default)]
struct Survey {
    bytes: u64,
    inodes: u64,
    dirs: u64,
    to_root: Vec<String>,
}

fn survey(root: &Path, tree: &AppliedTree) -> Result<Survey, RootfsError> {
    fn walk(
        dir: &Path,
        key: &str,
        tree: &AppliedTree,
        seen: &mut HashSet<(u64, u64)>,
        s: &mut Survey,
    ) -> Result<(), RootfsError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| RootfsError::Io { what, path, source }
        };
        for e in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
            let e = e.map_err(io("read directory", dir))?;
            let name = e.file_name();
            let name = name
                .to_str()
                .filter(|n| {
                    if tree.native_owners {
                        acceptable(n)
                    } else {
                        encodable(n)
                    }
                })
                .ok_or_else(|| RootfsError::Unencodable(e.path().display().to_string()))?;
            let k = join_key(key, name);
            // DirEntry::metadata does not follow symlinks.
            let md = e.metadata().map_err(io("stat", &e.path()))?;
            if !tree.native_owners
                && tree.fixups.get(&k).is_none()
                && (md.uid() != 0 || md.gid() != 0)
            {
                s.to_root.push(k.clone());
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            s.inodes += 1;
            if md.is_dir() {
                s.dirs += 1;
                walk(&e.path(), &k, tree, seen, s)?;
            } else if md.is_file() || md.file_type().is_symlink() {
                s.bytes += md.len().div_ceil(4096) * 4096;
            }
        }
        Ok(())
    }
    let mut s = Survey::default();
    walk(root, "", tree, &mut HashSet::new(), &mut s)?;
    s.inodes += tree
        .fixups
        .iter()
        .filter(|(_, f)| f.device.is_some())
        .count() as u64;
    Ok(s)
}

/// ext4 size in MiB: data + directory blocks + a quarter for metadata and the
/// journal, and enough room that mkfs's default inode ratio (one per 16 KiB) covers
/// the tree's inodes. The base image is read-only, so slack is wasted space.
fn size_mib(s: &Survey) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let data = s.bytes + s.dirs * 4096;
    let by_data = data + data / 4 + 64 * MIB;
    let by_inodes = (s.inodes + 1024) * 16384 * 5 / 4;
    by_data.max(by_inodes).div_ceil(MIB)
}

/// Build `out` (which must not exist) as an ext4 image labelled `label` from `tree`.
pub fn build_rootfs(
    tree: &AppliedTree,
    out: &Path,
    label: &str,
) -> Result<RootfsInfo, RootfsError> {
    let s = survey(&tree.root, tree)?;
    ext4::mkfs(out, size_mib(&s), label, Some(&tree.root))?;

    let mut script = Script::default();
    // mkfs.ext4 -d leaves the root directory 0755 root:root whatever the tree says
    // (and the host's staging root is private anyway): write what the image said.
    let (mode, uid, gid) = match tree.fixups.get("") {
        Some(f) => (f.mode, f.uid, f.gid),
        None => (0o040755, 0, 0),
    };
    script.sif("/", "mode", &format!("0{mode:o}"))?;
    script.sif("/", "uid", &uid.to_string())?;
    script.sif("/", "gid", &gid.to_string())?;

    for k in &s.to_root {
        let p = guest_path(k);
        script.sif(&p, "uid", "0")?;
        script.sif(&p, "gid", "0")?;
    }
    let xattr_dir = {
        let mut p = out.as_os_str().to_owned();
        p.push(".xattrs");
        PathBuf::from(p)
    };
    let mut n_values = 0usize;
    for (k, f) in tree.fixups.iter() {
        if k.is_empty() {
            // Only the root's xattrs are left to write (its mode and owner are above).
            if f.xattrs.is_empty() {
                continue;
            }
        }
        let p = guest_path(k);
        if let Some(d) = f.device {
            script.mknod(&p, d.block, d.major, d.minor)?;
            script.sif(&p, "mtime", &format!("@{}", f.mtime))?;
        }
        script.sif(&p, "mode", &format!("0{:o}", f.mode))?;
        script.sif(&p, "uid", &f.uid.to_string())?;
        script.sif(&p, "gid", &f.gid.to_string())?;
        for (name, value) in &f.xattrs {
            if n_values == 0 {
                std::fs::create_dir_all(&xattr_dir).map_err(|source| RootfsError::Io {
                    what: "create",
                    path: xattr_dir.clone(),
                    source,
                })?;
            }
            let vf = xattr_dir.join(n_values.to_string());
            n_values += 1;
            std::fs::write(&vf, value).map_err(|source| RootfsError::Io {
                what: "write",
                path: vf.clone(),
                source,
            })?;
            script.ea_set_file(&p, name, &vf)?;
        }
    }
    let applied = script.apply(out);
    if n_values > 0 {
        let _ = std::fs::remove_dir_all(&xattr_dir);
    }
    applied?;
    let size_bytes = std::fs::metadata(out)
        .map_err(|source| RootfsError::Io {
            what: "stat",
            path: out.into(),
            source,
        })?
        .len();
    Ok(RootfsInfo {
        size_bytes,
        inodes: s.inodes,
        debugfs_commands: script.lines(),
    })
}
