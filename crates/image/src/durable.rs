//! Making files durable before anything points at them.
//!
//! A rename is atomic but not durable: after a power loss the new name can point at
//! a file whose data never reached the disk (an empty blob under a digest name), or
//! the rename itself can be lost while a database row that names the new path was
//! committed. The order that survives a crash at any point is:
//!
//! 1. write the data, then fsync the file (and, for a tree, every file and
//!    directory in it, children before parents);
//! 2. rename it into place;
//! 3. fsync the directory that now holds the name (and the one it left, if
//!    different);
//! 4. only then record it anywhere else (a database row, a manifest).
//!
//! [`rename_durably`] does 1 (for a single file) to 3; [`sync_tree`] is step 1 for
//! a directory, so an image publish is `sync_tree(staging)`, `rename_durably`,
//! then the row insert.

use rustix::fs::{openat, AtFlags, FileType, Mode, OFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

fn open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
}

/// fsync the regular file at `path` (its data and metadata).
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    let fd = openat(rustix::fs::CWD, path, open_flags(), Mode::empty())?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

/// The directory at `path`, opened for an fsync or syncfs (`O_NOFOLLOW`: a symlink
/// at `path` itself is refused).
fn open_dir(path: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    Ok(openat(
        rustix::fs::CWD,
        path,
        open_flags() | OFlags::DIRECTORY,
        Mode::empty(),
    )?)
}

/// fsync the directory at `path`, making the names in it (a rename or a create)
/// durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let fd = open_dir(path)?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

/// Flush the whole filesystem holding `path` (`syncfs(2)`): the fallback when a tree
/// holds entries this process may not open (an image's mode-0000 file in a rootless
/// build), so [`sync_tree`] cannot reach each one.
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let fd = open_dir(path)?;
    rustix::fs::syncfs(&fd)?;
    Ok(())
}

/// The directory holding `path`'s name (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Durably move `from` to `to`: fsync `from` (a regular file; for a directory, call
/// [`sync_tree`] first, this then syncs only the directory itself), rename, then
/// fsync the destination directory and, if different, the source directory.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(from)?;
    if md.is_dir() {
        sync_dir(from)?;
    } else {
        sync_file(from)?;
    }
    std::fs::rename(from, to)?;
    let (src, dst) = (parent_of(from), parent_of(to));
    sync_dir(dst)?;
    if src != dst {
        sync_dir(src)?;
    }
    Ok(())
}

/// Replace the file at `path` with `bytes` so that a crash at any moment leaves
/// either the old file or the new one, never a torn or empty one: write a temporary
/// file beside it (mode 0600, never through a symlink), fsync it, rename it over
/// `path`, fsync the directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(parent_of(path))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// fsync every regular file and directory below `dir` and `dir` itself, children
/// before their directory, never following a symlink (symlinks are made durable by
/// their directory's fsync). Iterative: the depth of the tree is not limited by the
/// stack.
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let top = openat(
        rustix::fs::CWD,
        dir,
        open_flags() | OFlags::DIRECTORY,
        Mode::empty(),
    )?;
    // (directory, names still to visit); a directory is synced once all its
    // children were.
    let mut stack: Vec<(OwnedFd, Vec<std::ffi::CString>)> = vec![];
    let names = crate::oci::fsat::list(top.as_fd())?;
    stack.push((top, names));
    while let Some((fd, pending)) = stack.last_mut() {
        let Some(name) = pending.pop() else {
            rustix::fs::fsync(&*fd)?;
            stack.pop();
            continue;
        };
        let st = rustix::fs::statat(&*fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = openat(
                    &*fd,
                    name.as_c_str(),
                    open_flags() | OFlags::DIRECTORY,
                    Mode::empty(),
                )?;
                let names = crate::oci::fsat::list(sub.as_fd())?;
                stack.push((sub, names));
            }
            FileType::RegularFile => {
                let f = openat(&*fd, name.as_c_str(), open_flags(), Mode::empty())?;
                rustix::fs::fsync(&f)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_files_and_trees_and_syncs_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, "data").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let b = d.path().join("sub/b");
        rename_durably(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"data");
        assert!(!a.exists());

        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("x/y/z")).unwrap();
        std::fs::write(tree.join("x/y/z/f"), "f").unwrap();
        std::os::unix::fs::symlink("/nonexistent", tree.join("x/dangling")).unwrap();
        sync_tree(&tree).unwrap();
        rename_durably(&tree, &d.path().join("published")).unwrap();
        assert!(d.path().join("published/x/y/z/f").exists());

        // Whole-file replacement leaves no temporary behind and refuses a
        // symlinked temporary name.
        let f = d.path().join("state.json");
        write_file(&f, b"one").unwrap();
        write_file(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(!d.path().join(".state.json.tmp").exists());
        std::os::unix::fs::symlink(d.path().join("victim"), d.path().join(".state.json.tmp"))
            .unwrap();
        assert!(write_file(&f, b"three").is_err());
        assert!(!d.path().join("victim").exists());
        assert_eq!(std::fs::read(&f).unwrap(), b"two");

        // A symlink is never synced through.
        std::os::unix::fs::symlink(d.path().join("published"), d.path().join("link")).unwrap();
        assert!(sync_tree(&d.path().join("link")).is_err());
        assert!(sync_file(&d.path().join("link")).is_err());
    }
}
