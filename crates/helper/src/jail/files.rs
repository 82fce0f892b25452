//! The files a jailed guest uses, checked and placed without following symlinks.
//!
//! The owner daemon names its kernel and disks by path, inside its own state
//! directory, which the owner controls: any component could be swapped for a symlink
//! to a root-only file between a check and a use. So each file is opened once,
//! component by component with `O_NOFOLLOW`, checked through that descriptor (a
//! regular file owned by the owner) and then hard-linked into the chroot *from the
//! descriptor* (`linkat` of `/proc/self/fd/N`): what is linked is exactly what was
//! checked.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{fchown, linkat, Gid, Uid};

use super::JailError;

/// Open `path`, which must lie below `base`, without following any symlink below
/// `base`, and check that it is a regular file owned by `owner`. Returns an `O_PATH`
/// descriptor.
pub(crate) fn open_owned_file(base: &Path, path: &Path, owner: u32) -> Result<OwnedFd, JailError> {
    let refuse = |reason: String| JailError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let rel = path.strip_prefix(base).map_err(|_| {
        refuse(format!(
            "it is not inside the owner's state directory {}",
            base.display()
        ))
    })?;
    let mut comps = vec![];
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            _ => return Err(refuse("it has `.`, `..` or a repeated root in it".into())),
        }
    }
    let Some((last, dirs)) = comps.split_last() else {
        return Err(refuse("it names the state directory itself".into()));
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = openat(AT_FDCWD, base, dir_flags, Mode::empty())
        .map_err(|e| refuse(format!("cannot open {}: {e}", base.display())))?;
    for d in dirs {
        dir = openat(&dir, *d, dir_flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(|e| {
            refuse(format!(
                "{:?} on its way is not a plain directory ({e}); symlinks are not followed",
                d
            ))
        })?;
    }
    let fd = openat(
        &dir,
        *last,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(format!("cannot open it: {e}")))?;
    let st = fstat(&fd).map_err(|e| refuse(format!("cannot inspect it: {e}")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(refuse(
            "it is not a regular file (a symlink, device or directory)".into(),
        ));
    }
    if st.st_uid != owner {
        return Err(refuse(format!(
            "it belongs to uid {}, not to the owner (uid {owner})",
            st.st_uid
        )));
    }
    Ok(fd)
}

fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Hard-link the checked file `fd` to `dest` (which must not exist). `Ok(false)` when
/// `dest` is on another filesystem.
pub(crate) fn link_fd(fd: &OwnedFd, dest: &Path) -> Result<bool, JailError> {
    match linkat(
        AT_FDCWD,
        proc_path(fd).as_str(),
        AT_FDCWD,
        dest,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EXDEV) => Ok(false),
        Err(e) => Err(JailError::Io {
            what: "hard-link into the jail",
            path: dest.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Copy the checked file `fd` to `dest` (created, 0600, owned by `owner`).
pub(crate) fn copy_fd(fd: &OwnedFd, dest: &Path, owner: (u32, u32)) -> Result<(), JailError> {
    let io = |what| {
        let path = dest.to_path_buf();
        move |source| JailError::Io { what, path, source }
    };
    let mut src = std::fs::File::open(proc_path(fd)).map_err(io("reopen the source of"))?;
    let mut out = create_owned(dest, owner)?;
    std::io::copy(&mut src, &mut out).map_err(io("copy into"))?;
    out.flush().map_err(io("write"))?;
    out.sync_all().map_err(io("sync"))
}

/// Create `path` (which must not exist, and is not followed if it is a symlink),
/// mode 0600, owned by `owner`.
pub(crate) fn create_owned(path: &Path, owner: (u32, u32)) -> Result<std::fs::File, JailError> {
    let io = |what| {
        let path = path.to_path_buf();
        move |source| JailError::Io { what, path, source }
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io("create"))?;
    fchown(
        f.as_fd(),
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    )
    .map_err(|e| io("chown")(e.into()))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn opens_only_plain_owned_files_below_the_base() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("state");
        std::fs::create_dir_all(base.join("vms/v1")).unwrap();
        std::fs::write(base.join("vms/v1/disk.ext4"), b"disk").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let fd = open_owned_file(&base, &base.join("vms/v1/disk.ext4"), me).unwrap();
        // Linked from the descriptor: the same inode.
        let dest = d.path().join("linked");
        assert!(link_fd(&fd, &dest).unwrap());
        assert_eq!(
            std::fs::metadata(&dest).unwrap().ino(),
            std::fs::metadata(base.join("vms/v1/disk.ext4"))
                .unwrap()
                .ino()
        );
        let copy = d.path().join("copied");
        let gid = nix::unistd::getegid().as_raw();
        copy_fd(&fd, &copy, (me, gid)).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"disk");

        let refused =
            |p: &Path, owner: u32| open_owned_file(&base, p, owner).unwrap_err().to_string();
        assert!(refused(&base.join("vms/v1/disk.ext4"), me + 1).contains("not to the owner"));
        assert!(refused(Path::new("/etc/passwd"), 0).contains("not inside"));
        assert!(refused(&base.join("vms/../vms/v1/disk.ext4"), me).contains(".."));
        assert!(refused(&base.join("vms/v1"), me).contains("not a regular file"));
        // A symlinked component or leaf is not followed.
        std::os::unix::fs::symlink(base.join("vms/v1"), base.join("link")).unwrap();
        assert!(refused(&base.join("link/disk.ext4"), me).contains("symlinks are not followed"));
        std::os::unix::fs::symlink("/etc/passwd", base.join("vms/v1/passwd")).unwrap();
        assert!(refused(&base.join("vms/v1/passwd"), me).contains("not a regular file"));
        // create_owned never follows or replaces.
        assert!(create_owned(&base.join("vms/v1/passwd"), (me, gid)).is_err());
        assert!(create_owned(&copy, (me, gid)).is_err());
    }
}
