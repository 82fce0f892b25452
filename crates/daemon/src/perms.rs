//! Keeping banger's files private to the owner.
//!
//! The daemon runs with umask 077 (set by `bangerd`'s `main`), so everything it and
//! its children create (disks, console logs, sockets, image directories) is the
//! owner's alone. Installs made before that (or by a root daemon with root's umask)
//! have group- and world-readable files: VM disks holding workspaces, console logs,
//! the database. [`tighten`] fixes them on every start: directories become 0700,
//! files lose every group and other bit.
//!
//! Two subtrees are left as they are inside: an image's `work-seed/` (the image's
//! `/root`, whose modes are the guest's; the seed directory itself is made 0700, so
//! nothing below it is reachable) and the staging directories (removed on start).
//! Symlinks are never followed or changed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use banger_model::Layout;

/// Directories whose contents keep their modes (see the module docs).
const KEEP_INSIDE: [&str; 2] = [banger_image::files::WORK_SEED, ".staging"];
/// How deep the walk goes (banger's own layout is a few levels deep).
const MAX_DEPTH: usize = 16;

/// What [`tighten`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// Paths whose mode changed.
    pub changed: usize,
    /// Paths that could not be changed (owned by someone else, gone).
    pub failed: usize,
}

/// Make the state, cache and runtime directories of `layout` private (see the module
/// docs). Only files this process may change are changed; failures are counted and
/// logged, never fatal.
pub fn tighten(layout: &Layout) -> Tightened {
    let mut t = Tightened::default();
    for root in [&layout.state, &layout.cache, &layout.runtime] {
        walk(root, 0, &mut t);
    }
    if t.changed > 0 || t.failed > 0 {
        tracing::info!(
            changed = t.changed,
            failed = t.failed,
            "made banger's files private to their owner (directories 0700, files without group or other access)"
        );
    }
    t
}

fn walk(path: &Path, depth: usize, t: &mut Tightened) {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return;
    };
    let ft = md.file_type();
    if ft.is_symlink() {
        return;
    }
    let mode = md.mode() & 0o7777;
    let want = if ft.is_dir() { 0o700 } else { mode & 0o700 };
    if mode != want && (ft.is_dir() || mode & 0o077 != 0) {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(want)) {
            Ok(()) => t.changed += 1,
            Err(e) => {
                t.failed += 1;
                tracing::warn!(path = %path.display(), error = %e, "could not make private");
            }
        }
    }
    if !ft.is_dir() || depth >= MAX_DEPTH {
        return;
    }
    let keep = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| KEEP_INSIDE.contains(&n));
    if keep {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            walk(&e.path(), depth + 1, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_0700_files_private_seeds_and_links_alone() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::under(d.path());
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let img = l.image_dir("i1");
        let seed = img.join(banger_image::files::WORK_SEED);
        std::fs::create_dir_all(seed.join(".ssh")).unwrap();
        std::fs::create_dir_all(l.vm_dir("v1")).unwrap();
        std::fs::create_dir_all(&l.runtime).unwrap();
        std::fs::create_dir_all(l.blob_cache()).unwrap();
        for (p, m) in [
            (l.state.clone(), 0o755),
            (l.state.join("images"), 0o755),
            (img.clone(), 0o755),
            (seed.clone(), 0o755),
            (seed.join(".ssh"), 0o755),
            (l.cache.clone(), 0o775),
            (l.blob_cache(), 0o755),
        ] {
            set(&p, m);
        }
        let files = [
            (l.db(), 0o644),
            (img.join("rootfs.ext4"), 0o644),
            (seed.join(".bashrc"), 0o644),
            (l.vm_dir("v1").join("work.ext4"), 0o666),
            (l.runtime.join("tool"), 0o755),
            (l.blob_cache().join("sha256-x"), 0o600),
        ];
        for (p, m) in &files {
            std::fs::write(p, b"x").unwrap();
            set(p, *m);
        }
        std::os::unix::fs::symlink("/etc/passwd", l.state.join("link")).unwrap();
        let before_link = mode(Path::new("/etc/passwd"));

        let t = tighten(&l);
        assert_eq!(t.failed, 0);
        for dir in [
            &l.state,
            &l.state.join("images"),
            &img,
            &seed,
            &l.cache,
            &l.blob_cache(),
        ] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        assert_eq!(mode(&l.db()), 0o600);
        assert_eq!(mode(&img.join("rootfs.ext4")), 0o600);
        assert_eq!(mode(&l.vm_dir("v1").join("work.ext4")), 0o600);
        assert_eq!(
            mode(&l.runtime.join("tool")),
            0o700,
            "the owner's bits stay"
        );
        // The guest's /root keeps its own modes inside the (now closed) seed.
        assert_eq!(mode(&seed.join(".ssh")), 0o755);
        assert_eq!(mode(&seed.join(".bashrc")), 0o644);
        assert_eq!(
            mode(Path::new("/etc/passwd")),
            before_link,
            "links are not followed"
        );
        // A second pass has nothing to do.
        assert_eq!(tighten(&l).changed, 0);
    }
}
