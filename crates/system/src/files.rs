//! Putting files in place and taking them away: every install is a copy beside the
//! destination, fsync, then one rename, so a crash never leaves a half-written
//! binary where `/usr/local/bin/banger` was.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::io;
use crate::SystemError;

/// Create `dir` and its missing parents, each 0755 whatever the umask; existing
/// directories are left as they are.
pub fn create_dir_0755(dir: &Path) -> Result<(), SystemError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_0755(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("set the mode of", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", dir)(e)),
    }
}

/// Install `bytes` at `dest` with `mode` (root-owned when we are root), atomically.
pub fn install_bytes(bytes: &[u8], dest: &Path, mode: u32) -> Result<(), SystemError> {
    crate::record::write_atomic(dest, bytes, mode)
}

/// Install the file `src` at `dest` with `mode`, atomically (copy beside `dest`,
/// fsync, rename). `dest` may be the running binary: the rename replaces the name,
/// the running process keeps its inode.
pub fn install_file(src: &Path, dest: &Path, mode: u32) -> Result<(), SystemError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    create_dir_0755(dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut from = std::fs::File::open(src)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.flush()?;
        to.set_permissions(std::fs::Permissions::from_mode(mode))?;
        to.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io("install", dest))
}

/// Remove `path` if it exists (a file or symlink; never followed). True if removed.
pub fn remove_file(path: &Path) -> Result<bool, SystemError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Remove directory `path` and everything below it, if it exists (symlinks inside
/// are removed, not followed). True if removed.
pub fn remove_tree(path: &Path) -> Result<bool, SystemError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("inspect", path)(e)),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path)
            .map(|()| true)
            .map_err(io("remove", path)),
        Ok(_) => remove_file(path),
    }
}

/// Remove `dir` if it is empty; leave it otherwise.
pub fn remove_dir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_atomically_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, b"binary v1").unwrap();
        let dest = d.path().join("usr/local/bin/banger");
        install_file(&src, &dest, 0o755).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"binary v1");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::metadata(d.path().join("usr/local"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        // Replacing keeps a reader of the old inode whole.
        let old = std::fs::File::open(&dest).unwrap();
        std::fs::write(&src, b"binary v2").unwrap();
        install_file(&src, &dest, 0o755).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"binary v2");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &old, &mut s).unwrap();
        assert_eq!(s, "binary v1");
        // Nothing temporary is left.
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(remove_file(&dest).unwrap());
        assert!(!remove_file(&dest).unwrap());
        assert!(remove_tree(&d.path().join("usr")).unwrap());
        assert!(!remove_tree(&d.path().join("usr")).unwrap());
    }
}
