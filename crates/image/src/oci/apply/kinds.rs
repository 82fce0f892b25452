//! The writers for each kind of tar entry: regular files, directories, symlinks,
//! hardlinks and device/fifo nodes. Split from `apply.rs` so the layer loop and the
//! per-entry bookkeeping read apart from the syscalls that put one entry on disk.

use super::{name_error, ts, Applier, Ctx, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG};
use crate::oci::entry::EntryMeta;
use crate::oci::error::ApplyError;
use crate::oci::fixups::Device;
use crate::oci::fsat::{dir_flags, kind_at, WalkError};
use crate::oci::names::{check_path_caps, NameProblem, RelPath};
use rustix::fs::{
    chmodat, futimens, linkat, makedev, mkdirat, mknodat, openat, symlinkat, utimensat, AtFlags,
    FileType, Mode, OFlags,
};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

impl Applier {
    pub(super) fn file<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        data: &mut R,
        m: &EntryMeta,
    ) -> Result<(), ApplyError> {
        let key = ctx.rel.key();
        let dir = self.parent(ctx)?;
        if ctx.rel.file_name().is_none() {
            return Err(ctx.bad("a file cannot replace the root directory"));
        }
        self.clear_slot(dir.as_fd(), ctx, false)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&dir, ctx.name(), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.io("create", &key, e.into()))?;
        let mut f = std::fs::File::from(fd);
        let mut buf = std::mem::take(&mut self.buf);
        let copied = loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    break Err(ApplyError::Corrupt {
                        layer: ctx.layer.into(),
                        source,
                    })
                }
            };
            if let Err(e) = f.write_all(&buf[..n]) {
                break Err(self.io("write", &key, e));
            }
        };
        self.buf = buf;
        copied?;
        self.meta_fd(f.as_fd(), &key, S_IFREG, m)?;
        futimens(&f, &ts(m.mtime)).map_err(|e| self.io("set times of", &key, e.into()))?;
        Ok(())
    }

    pub(super) fn directory(&mut self, ctx: &Ctx<'_>, m: &EntryMeta) -> Result<(), ApplyError> {
        let key = ctx.rel.key();
        if ctx.rel.file_name().is_none() {
            // The image's root directory metadata goes only into the ext4 image: on the
            // host the staging root stays 0700 and ours, because the tree below holds
            // the image's setuid binaries and device nodes, which no other host user
            // may reach.
            let f = self.fixup(S_IFDIR | m.perm, m.uid, m.gid, None, 0, m.xattrs.clone());
            self.fixups.set("", f);
            self.dir_times.insert(key, m.mtime);
            return Ok(());
        }
        let dir = self.parent(ctx)?;
        if !self.clear_slot(dir.as_fd(), ctx, true)? {
            mkdirat(&dir, ctx.name(), Mode::from_raw_mode(0o700))
                .map_err(|e| self.io("create directory", &key, e.into()))?;
        }
        let fd = openat(&dir, ctx.name(), dir_flags(), Mode::empty())
            .map_err(|e| self.io("open directory", &key, e.into()))?;
        self.meta_fd(fd.as_fd(), &key, S_IFDIR, m)?;
        self.dir_times.insert(key, m.mtime);
        Ok(())
    }

    pub(super) fn symlink<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        entry: &tar::Entry<'_, R>,
        m: &EntryMeta,
    ) -> Result<(), ApplyError> {
        let key = ctx.rel.key();
        let target = match entry.link_name_bytes() {
            Some(t) if !t.is_empty() => t.into_owned(),
            _ => return Err(ctx.bad("symlink without a target")),
        };
        if ctx.rel.file_name().is_none() {
            return Err(ctx.bad("a symlink cannot replace the root directory"));
        }
        let dir = self.parent(ctx)?;
        self.clear_slot(dir.as_fd(), ctx, false)?;
        // The target is stored, never resolved: absolute targets are normal in images
        // and only mean something inside the guest.
        symlinkat(std::ffi::OsStr::from_bytes(&target), &dir, ctx.name())
            .map_err(|e| self.io("create symlink", &key, e.into()))?;
        self.chown_native(&dir, ctx, m, &key)?;
        self.record(&key, S_IFLNK, 0o777, m, None);
        utimensat(&dir, ctx.name(), &ts(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io("set times of", &key, e.into()))?;
        Ok(())
    }

    pub(super) fn hardlink<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), ApplyError> {
        let key = ctx.rel.key();
        let raw = match entry.link_name_bytes() {
            Some(t) if !t.is_empty() => t.into_owned(),
            _ => return Err(ctx.bad("hardlink without a target")),
        };
        check_path_caps(&raw, ctx.layer)?;
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let outside = || ApplyError::HardlinkOutside {
            layer: ctx.layer.into(),
            path: ctx.path.into(),
            target: shown.clone(),
        };
        let target = match RelPath::parse_with(&raw, !self.native) {
            Ok(t) => t,
            Err(NameProblem::DotDot | NameProblem::Absolute) => return Err(outside()),
            Err(NameProblem::Unencodable) => {
                return Err(name_error(NameProblem::Unencodable, ctx.layer, &shown))
            }
        };
        let target_problem = |reason| ApplyError::HardlinkTarget {
            layer: ctx.layer.into(),
            path: ctx.path.into(),
            target: shown.clone(),
            reason,
        };
        let Some(tname) = target.file_name() else {
            return Err(target_problem("it is the root directory"));
        };
        if ctx.rel.file_name().is_none() {
            return Err(ctx.bad("a hardlink cannot replace the root directory"));
        }
        if target == *ctx.rel {
            return Ok(());
        }
        let tdir = match self.root.dir(target.parent(), false, &mut vec![]) {
            Ok(fd) => fd,
            Err(WalkError::Symlink(ancestor)) => {
                return Err(ApplyError::HardlinkThroughSymlink {
                    layer: ctx.layer.into(),
                    path: ctx.path.into(),
                    target: shown,
                    ancestor,
                })
            }
            Err(WalkError::Missing(_) | WalkError::NotDir(_)) => {
                return Err(target_problem("it does not exist"))
            }
            Err(e) => return Err(self.walk_error(ctx, e)),
        };
        let tkey = target.key();
        let recorded = self.fixups.get(&tkey).cloned();
        match kind_at(tdir.as_fd(), tname).map_err(|e| self.io("inspect", &tkey, e))? {
            Some(FileType::Directory) => return Err(target_problem("it is a directory")),
            Some(_) => {}
            // A device node that exists only as a record (unprivileged apply): the link
            // becomes a second record of the same device.
            None if recorded.as_ref().is_some_and(|f| f.device.is_some()) => {
                let dir = self.parent(ctx)?;
                self.clear_slot(dir.as_fd(), ctx, false)?;
                if let Some(f) = recorded {
                    self.fixups.set(&key, f);
                }
                return Ok(());
            }
            None => return Err(target_problem("it does not exist")),
        }
        let dir = self.parent(ctx)?;
        self.clear_slot(dir.as_fd(), ctx, false)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(&tdir, tname, &dir, ctx.name(), AtFlags::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => target_problem("it does not exist"),
            e => self.io("create hardlink", &key, e.into()),
        })?;
        match recorded {
            Some(f) if !self.native => self.fixups.set(&key, f),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn node(
        &mut self,
        ctx: &Ctx<'_>,
        kind: tar::EntryType,
        m: &EntryMeta,
    ) -> Result<(), ApplyError> {
        let key = ctx.rel.key();
        if ctx.rel.file_name().is_none() {
            return Err(ctx.bad("a device cannot replace the root directory"));
        }
        let (type_bits, file_type) = match kind {
            tar::EntryType::Char => (S_IFCHR, FileType::CharacterDevice),
            tar::EntryType::Block => (S_IFBLK, FileType::BlockDevice),
            _ => (S_IFIFO, FileType::Fifo),
        };
        let dir = self.parent(ctx)?;
        self.clear_slot(dir.as_fd(), ctx, false)?;
        if type_bits != S_IFIFO && !self.native {
            // Only root may mknod; debugfs creates it in the image instead.
            let device = Device {
                block: type_bits == S_IFBLK,
                major: m.major,
                minor: m.minor,
            };
            self.record(&key, type_bits, m.perm, m, Some(device));
            return Ok(());
        }
        let perm = self.host_perm(type_bits, m.perm);
        mknodat(
            &dir,
            ctx.name(),
            file_type,
            Mode::from_raw_mode(perm),
            makedev(m.major, m.minor),
        )
        .map_err(|e| self.io("create device node", &key, e.into()))?;
        self.chown_native(&dir, ctx, m, &key)?;
        // mknod's mode went through the umask (and chown cleared setuid bits); the node
        // was just created by us, so this chmod cannot be redirected by a symlink.
        chmodat(
            &dir,
            ctx.name(),
            Mode::from_raw_mode(perm),
            AtFlags::empty(),
        )
        .map_err(|e| self.io("chmod", &key, e.into()))?;
        self.record(&key, type_bits, perm, m, None);
        utimensat(&dir, ctx.name(), &ts(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io("set times of", &key, e.into()))?;
        Ok(())
    }
}
