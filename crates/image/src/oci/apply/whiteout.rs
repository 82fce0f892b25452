//! Whiteouts and opaque directories: the deletions of the OCI changeset format.
//!
//! Both only ever hide what lower layers put there: whatever the current layer wrote
//! (tracked in `written`, with all its ancestors) stays.

use super::{mark_written, name_error, Applier, Ctx};
use crate::oci::error::ApplyError;
use crate::oci::fsat::{dir_flags, kind_at, list, remove_all_at, WalkError};
use crate::oci::names::{join_key, NameProblem, RelPath};
use rustix::fs::{openat, FileType, Mode};
use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

impl Applier {
    pub(super) fn whiteout(
        &mut self,
        layer: &str,
        path: &str,
        rel: &RelPath,
        target: &str,
        written: &HashSet<String>,
    ) -> Result<(), ApplyError> {
        if target.is_empty() || target == "." {
            return Err(ApplyError::BadWhiteout {
                layer: layer.into(),
                path: path.into(),
            });
        }
        if target == ".." {
            return Err(name_error(NameProblem::DotDot, layer, path));
        }
        let victim = rel.sibling(target);
        let key = victim.key();
        // Whiteouts hide lower layers only, never what this layer wrote.
        if written.contains(&key) {
            return Ok(());
        }
        let ctx = Ctx { layer, path, rel };
        let dir = match self.root.dir(rel.parent(), false, &mut vec![]) {
            Ok(fd) => fd,
            Err(WalkError::Missing(_)) => {
                self.fixups.remove_tree(&key);
                return Ok(());
            }
            Err(e) => return Err(self.walk_error(&ctx, e)),
        };
        let was = remove_all_at(dir.as_fd(), target).map_err(|e| self.io("remove", &key, e))?;
        if was == Some(FileType::Directory) {
            self.root.invalidate();
        }
        self.fixups.remove_tree(&key);
        Ok(())
    }

    pub(super) fn opaque(
        &mut self,
        layer: &str,
        path: &str,
        rel: &RelPath,
        written: &mut HashSet<String>,
    ) -> Result<(), ApplyError> {
        let ctx = Ctx { layer, path, rel };
        let dir = self.parent(&ctx)?;
        let dir_key = rel.parent().join("/");
        mark_written(written, &dir_key);
        self.clear_unwritten(dir.as_fd(), &dir_key, written)?;
        // Record-only device nodes have no file to find in the walk above.
        let stale: Vec<String> = self
            .fixups
            .below(&dir_key)
            .filter(|(k, _)| !written.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.fixups.remove_tree(&k);
        }
        Ok(())
    }

    /// Remove everything under `dir` that the current layer did not write, descending
    /// into the directories it did write.
    fn clear_unwritten(
        &mut self,
        dir: BorrowedFd<'_>,
        dir_key: &str,
        written: &HashSet<String>,
    ) -> Result<(), ApplyError> {
        let names = list(dir).map_err(|e| self.io("list", dir_key, e))?;
        for name in names {
            let s = name.to_string_lossy();
            let key = join_key(dir_key, &s);
            let kept = name.to_str().is_ok() && written.contains(&key);
            if kept {
                if kind_at(dir, &s).map_err(|e| self.io("inspect", &key, e))?
                    == Some(FileType::Directory)
                {
                    let sub = openat(dir, name.as_c_str(), dir_flags(), Mode::empty())
                        .map_err(|e| self.io("open directory", &key, e.into()))?;
                    self.clear_unwritten(sub.as_fd(), &key, written)?;
                }
            } else {
                let was =
                    remove_all_at(dir, name.as_c_str()).map_err(|e| self.io("remove", &key, e))?;
                if was == Some(FileType::Directory) {
                    self.root.invalidate();
                }
                self.fixups.remove_tree(&key);
            }
        }
        Ok(())
    }
}
