//! Applying layers, in order, into a staging directory.
//!
//! Semantics follow the OCI image spec's changeset rules (as Docker and containerd
//! implement them): entries replace what is there (a directory stays a directory and
//! only gets new metadata), `.wh.<name>` deletes `<name>` from lower layers,
//! `.wh..wh..opq` hides everything lower layers put in its directory, and whiteouts
//! never delete what the same layer wrote. Missing parent directories are created as
//! 0755 root directories.
//!
//! The same entry logic applies a plain tar stream without a digest
//! ([`Applier::apply_stream`], for the tar an export guest wrote), optionally with
//! `.wh.*` names read as ordinary files ([`Whiteouts::Literal`]).
//!
//! Safety: see [`super::fsat`] (no symlink is ever followed) and [`super::names`] (no
//! unsafe name reaches the disk); blobs are verified before use ([`super::layer`]).

use super::entry::EntryMeta;
use super::error::ApplyError;
use super::fixups::{Device, Fixup, Fixups};
use super::fsat::{kind_at, remove_all_at, Root, WalkError};
use super::layer::{capped, open_verified, tar_stream, LayerDescriptor, Limits};
use super::names::{check_path_caps, NameProblem, RelPath};
use rustix::fs::{
    chownat, fchmod, fchown, fsetxattr, futimens, AtFlags, FileType, Gid, Mode, Timespec,
    Timestamps, Uid, XattrFlags,
};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;

mod kinds;
mod whiteout;

/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// How owners (and device nodes) get into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerMode {
    /// [`OwnerMode::Native`] when running as root, else [`OwnerMode::Record`].
    #[default]
    Auto,
    /// chown/mknod in the host tree (needs root); `mkfs.ext4 -d` copies them.
    Native,
    /// Leave the host tree owned by us with owner-accessible modes, and record what
    /// the image wants in [`Fixups`] for the debugfs pass.
    Record,
}

/// Options for an [`Applier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Size caps.
    pub limits: Limits,
    /// Owner handling.
    pub owners: OwnerMode,
}

/// How `.wh.*` names in a tar stream are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whiteouts {
    /// The OCI changeset rules: `.wh.<name>` deletes `<name>`, `.wh..wh..opq` makes
    /// its directory opaque, other `.wh..wh.*` names are skipped (image layers).
    #[default]
    Interpret,
    /// Plain names: the stream is a whole, already merged tree (an export), which has
    /// no whiteouts, so a file called `.wh.x` is just a file.
    Literal,
}

/// What one layer (or stream) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// The layer's digest (for [`Applier::apply_stream`], its label).
    pub digest: String,
    /// Blob size (for [`Applier::apply_stream`], the bytes read, as for `uncompressed_bytes`).
    pub compressed_bytes: u64,
    /// Bytes of tar stream read.
    pub uncompressed_bytes: u64,
    /// Tar entries processed (including whiteouts).
    pub entries: u64,
}

/// A fully applied tree, ready for [`super::rootfs::build_rootfs`].
#[derive(Debug, Clone)]
pub struct AppliedTree {
    /// The staging directory holding the tree.
    pub root: PathBuf,
    /// Metadata still to be written into the ext4 image: in native mode only the
    /// root directory's (the host staging root stays private).
    pub fixups: Fixups,
    /// Whether owners were applied in the host tree (root) or recorded.
    pub native_owners: bool,
}

/// Applies layers one after another into a staging directory.
pub struct Applier {
    staging: PathBuf,
    root: Root,
    native: bool,
    limits: Limits,
    total: u64,
    entries: u64,
    /// Path and xattr bytes seen so far (see [`Limits::max_metadata_bytes`]).
    metadata_bytes: u64,
    fixups: Fixups,
    dir_times: HashMap<String, Timespec>,
    buf: Vec<u8>,
}

/// The entry being applied, for error messages.
struct Ctx<'a> {
    layer: &'a str,
    path: &'a str,
    rel: &'a RelPath,
}

impl Ctx<'_> {
    fn name(&self) -> &str {
        self.rel.file_name().unwrap_or(".")
    }
    fn bad(&self, reason: impl Into<String>) -> ApplyError {
        ApplyError::BadEntry {
            layer: self.layer.into(),
            path: self.path.into(),
            reason: reason.into(),
        }
    }
}

fn name_error(p: NameProblem, layer: &str, path: &str) -> ApplyError {
    let (layer, path) = (layer.to_string(), path.to_string());
    match p {
        NameProblem::DotDot => ApplyError::DotDot { layer, path },
        NameProblem::Absolute => ApplyError::Absolute { layer, path },
        NameProblem::Unencodable => ApplyError::Unencodable { layer, path },
    }
}

/// Record `key` and all its ancestors as written by the current layer (an opaque
/// marker must keep the directories leading to what this layer wrote).
fn mark_written(written: &mut HashSet<String>, key: &str) {
    let mut k = key;
    while written.insert(k.to_string()) && !k.is_empty() {
        k = k.rsplit_once('/').map_or("", |(p, _)| p);
    }
}

fn ts(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Applier {
    /// Start applying into `staging`, an existing directory (normally empty).
    pub fn new(staging: &Path, opts: ApplyOptions) -> Result<Applier, ApplyError> {
        let native = match opts.owners {
            OwnerMode::Auto => rustix::process::geteuid().is_root(),
            OwnerMode::Native => true,
            OwnerMode::Record => false,
        };
        let open_err = |source| ApplyError::Io {
            what: "open staging directory",
            path: staging.into(),
            source,
        };
        let root = Root::open(staging, native).map_err(open_err)?;
        // Private while it holds the image's setuid files and device nodes.
        fchmod(root.fd(), Mode::from_raw_mode(0o700)).map_err(|e| open_err(e.into()))?;
        Ok(Applier {
            staging: staging.into(),
            root,
            native,
            limits: opts.limits,
            total: 0,
            entries: 0,
            metadata_bytes: 0,
            fixups: Fixups::default(),
            dir_times: HashMap::new(),
            buf: vec![0; 256 * 1024],
        })
    }

    /// Verify the blob at `blob` against `desc` (size, sha256, caps), then apply it.
    /// On error the staging tree is in an unspecified state (but nothing outside it
    /// was touched): discard it.
    pub fn apply_layer(
        &mut self,
        blob: &Path,
        desc: &LayerDescriptor,
    ) -> Result<LayerStats, ApplyError> {
        let file = open_verified(blob, desc, &self.limits)?;
        let cap = self.stream_cap();
        let (stream, hit, count) = tar_stream(file, desc, cap)?;
        let entries =
            self.apply_tar(&desc.digest, stream, hit, &count, cap, Whiteouts::Interpret)?;
        Ok(LayerStats {
            digest: desc.digest.clone(),
            compressed_bytes: desc.size,
            uncompressed_bytes: count.get(),
            entries,
        })
    }

    /// Apply a tar stream that has no digest to verify, such as the tar an export
    /// guest wrote (whose length the caller bounds) or a rootfs tarball from this
    /// host, with the same hostile-content checks and the same caps as
    /// [`Applier::apply_layer`] (the stream counts as one layer). Plain, gzip and zstd
    /// streams are told apart by their first bytes. `label` names the stream in errors
    /// and in the stats. With [`Whiteouts::Literal`], `.wh.*` names are ordinary
    /// files. On error, discard the staging tree (nothing outside it was touched).
    pub fn apply_stream<R: Read + 'static>(
        &mut self,
        label: &str,
        reader: R,
        whiteouts: Whiteouts,
    ) -> Result<LayerStats, ApplyError> {
        let cap = self.stream_cap();
        let (reader, _) = super::layer::decompressed(reader, label)?;
        let (stream, hit, count) = capped(reader, cap);
        let entries = self.apply_tar(label, stream, hit, &count, cap, whiteouts)?;
        Ok(LayerStats {
            digest: label.into(),
            compressed_bytes: count.get(),
            uncompressed_bytes: count.get(),
            entries,
        })
    }

    /// The most the next layer may unpack to: the per-layer cap, or what is left of
    /// the total.
    fn stream_cap(&self) -> u64 {
        let remaining = self
            .limits
            .max_total_uncompressed
            .saturating_sub(self.total);
        self.limits.max_uncompressed.min(remaining)
    }

    /// Apply every entry of a capped tar stream; returns the number of entries.
    fn apply_tar<R: Read>(
        &mut self,
        layer: &str,
        stream: R,
        hit: Rc<Cell<bool>>,
        count: &Rc<Cell<u64>>,
        cap: u64,
        whiteouts: Whiteouts,
    ) -> Result<u64, ApplyError> {
        let (stream, violation) = super::guard::guard(stream);
        let capped = |e: ApplyError| match e {
            ApplyError::Corrupt { .. } if hit.get() => ApplyError::UncompressedTooLarge {
                layer: layer.into(),
                cap,
            },
            ApplyError::Corrupt { source, .. } => match violation.take() {
                Some(v) => ApplyError::HostileHeader {
                    layer: layer.into(),
                    what: v.to_string(),
                },
                None => ApplyError::Corrupt {
                    layer: layer.into(),
                    source,
                },
            },
            other => other,
        };
        let corrupt = |source| ApplyError::Corrupt {
            layer: layer.into(),
            source,
        };
        let mut archive = tar::Archive::new(stream);
        let mut written = HashSet::new();
        let mut entries = 0u64;
        for entry in archive.entries().map_err(corrupt).map_err(capped)? {
            let mut entry = entry.map_err(corrupt).map_err(capped)?;
            entries += 1;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(ApplyError::TooManyEntries {
                    layer: layer.into(),
                    cap: self.limits.max_entries,
                });
            }
            self.entry(layer, &mut entry, &mut written, whiteouts)
                .map_err(capped)?;
        }
        self.total += count.get();
        Ok(entries)
    }

    /// Set directory times (they change as children are added) and hand over the tree.
    pub fn finish(mut self) -> Result<AppliedTree, ApplyError> {
        let times = std::mem::take(&mut self.dir_times);
        for (key, t) in times {
            let comps: Vec<String> = key
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            // A directory a later layer removed or replaced is simply gone.
            let Ok(fd) = self.root.dir(&comps, false, &mut vec![]) else {
                continue;
            };
            futimens(&fd, &ts(t)).map_err(|e| self.io("set times of", &key, e.into()))?;
        }
        Ok(AppliedTree {
            root: self.staging,
            fixups: self.fixups,
            native_owners: self.native,
        })
    }

    fn io(&self, what: &'static str, key: &str, source: std::io::Error) -> ApplyError {
        ApplyError::Io {
            what,
            path: self.staging.join(key),
            source,
        }
    }

    fn entry<R: Read>(
        &mut self,
        layer: &str,
        entry: &mut tar::Entry<'_, R>,
        written: &mut HashSet<String>,
        whiteouts: Whiteouts,
    ) -> Result<(), ApplyError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        check_path_caps(&raw, layer)?;
        let rel =
            RelPath::parse_with(&raw, !self.native).map_err(|p| name_error(p, layer, &shown))?;
        if let Some(name) = rel
            .file_name()
            .filter(|_| whiteouts == Whiteouts::Interpret)
        {
            if name == OPAQUE {
                return self.opaque(layer, &shown, &rel, written);
            }
            if name.starts_with(".wh..wh.") {
                // aufs bookkeeping (`.wh..wh.plnk`, ...): never part of the image.
                return Ok(());
            }
            if let Some(target) = name.strip_prefix(".wh.") {
                return self.whiteout(layer, &shown, &rel, target, written);
            }
        }
        let ctx = Ctx {
            layer,
            path: &shown,
            rel: &rel,
        };
        let meta = EntryMeta::read(entry).map_err(|r| ctx.bad(r))?;
        let xattr_bytes: usize = meta.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.count_metadata(layer, raw.len() + xattr_bytes)?;
        use tar::EntryType as T;
        match kind {
            // Old tars mark directories only with a trailing slash.
            T::Regular if raw.ends_with(b"/") => self.directory(&ctx, &meta)?,
            T::Regular | T::Continuous | T::GNUSparse => self.file(&ctx, entry, &meta)?,
            T::Directory => self.directory(&ctx, &meta)?,
            T::Symlink => self.symlink(&ctx, entry, &meta)?,
            T::Link => self.hardlink(&ctx, entry)?,
            T::Char | T::Block | T::Fifo => self.node(&ctx, kind, &meta)?,
            other => return Err(ctx.bad(format!("unsupported tar entry type {other:?}"))),
        }
        mark_written(written, &rel.key());
        Ok(())
    }

    /// Count `n` bytes of paths or xattrs kept in memory against
    /// [`Limits::max_metadata_bytes`].
    fn count_metadata(&mut self, layer: &str, n: usize) -> Result<(), ApplyError> {
        self.metadata_bytes = self.metadata_bytes.saturating_add(n as u64);
        if self.metadata_bytes > self.limits.max_metadata_bytes {
            return Err(ApplyError::TooMuchMetadata {
                layer: layer.into(),
                cap: self.limits.max_metadata_bytes,
            });
        }
        Ok(())
    }

    fn walk_error(&self, ctx: &Ctx<'_>, e: WalkError) -> ApplyError {
        let (layer, path) = (ctx.layer.to_string(), ctx.path.to_string());
        match e {
            WalkError::Symlink(ancestor) => ApplyError::SymlinkAncestor {
                layer,
                path,
                ancestor,
            },
            WalkError::NotDir(ancestor) => ApplyError::NotADirectory {
                layer,
                path,
                ancestor,
            },
            WalkError::Missing(a) => ctx.bad(format!("parent {a:?} is missing")),
            WalkError::Io(key, source) => self.io("open directory", &key, source),
        }
    }

    /// The entry's parent directory, created (0755 root) where missing.
    fn parent(&mut self, ctx: &Ctx<'_>) -> Result<OwnedFd, ApplyError> {
        let mut created = vec![];
        let r = self.root.dir(ctx.rel.parent(), true, &mut created);
        // Implicit parents cost bookkeeping like entries do: count them against the caps.
        self.entries += created.len() as u64;
        let created_bytes: usize = created.iter().map(String::len).sum();
        self.count_metadata(ctx.layer, created_bytes)?;
        if self.entries > self.limits.max_entries {
            return Err(ApplyError::TooManyEntries {
                layer: ctx.layer.into(),
                cap: self.limits.max_entries,
            });
        }
        for key in created {
            // A record-only device node with that name is gone now.
            self.fixups.remove_tree(&key);
            if !self.native {
                self.fixups
                    .set(&key, self.fixup(S_IFDIR | 0o755, 0, 0, None, 0, vec![]));
            }
        }
        r.map_err(|e| self.walk_error(ctx, e))
    }

    fn fixup(
        &self,
        mode: u32,
        uid: u32,
        gid: u32,
        device: Option<Device>,
        mtime: i64,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> Fixup {
        Fixup {
            uid,
            gid,
            mode,
            device,
            mtime,
            xattrs,
        }
    }

    /// Make room for an entry at `name` in `dir`: an existing directory stays when the
    /// new entry is a directory too; anything else there is removed (never followed).
    /// Returns true when a directory was kept.
    fn clear_slot(
        &mut self,
        dir: BorrowedFd<'_>,
        ctx: &Ctx<'_>,
        keep_dir: bool,
    ) -> Result<bool, ApplyError> {
        let key = ctx.rel.key();
        let name = ctx.name();
        match kind_at(dir, name).map_err(|e| self.io("inspect", &key, e))? {
            None => {
                self.fixups.remove_tree(&key);
                Ok(false)
            }
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(_) => {
                let was = remove_all_at(dir, name).map_err(|e| self.io("replace", &key, e))?;
                if was == Some(FileType::Directory) {
                    self.root.invalidate();
                }
                self.fixups.remove_tree(&key);
                Ok(false)
            }
        }
    }

    /// Host permission bits in record mode: the owner (us) must be able to read files
    /// and enter and fill directories, whatever the image says (mkfs.ext4 -d reads
    /// the tree as us; the debugfs pass writes the real mode).
    /// In native-owner mode, give the entry `ctx.name()` in `dir` the layer's owner
    /// without following it (symlinks and device nodes are chowned in place).
    fn chown_native(
        &self,
        dir: &OwnedFd,
        ctx: &Ctx<'_>,
        m: &EntryMeta,
        key: &str,
    ) -> Result<(), ApplyError> {
        if !self.native {
            return Ok(());
        }
        chownat(
            dir,
            ctx.name(),
            Some(Uid::from_raw_unchecked(m.uid)),
            Some(Gid::from_raw_unchecked(m.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io("chown", key, e.into()))
    }

    fn host_perm(&self, type_bits: u32, perm: u32) -> u32 {
        match (self.native, type_bits) {
            (true, _) => perm,
            (false, S_IFDIR) => perm | 0o700,
            (false, _) => perm | 0o600,
        }
    }

    /// Record what the image wants for `key` when the host tree cannot hold it.
    fn record(
        &mut self,
        key: &str,
        type_bits: u32,
        host_perm: u32,
        m: &EntryMeta,
        device: Option<Device>,
    ) {
        if self.native {
            return;
        }
        // Unrecorded paths become root-owned in the ext4 pass, so only non-root
        // owners, modes the host tree cannot hold, devices and xattrs need a record.
        // setuid/setgid/sticky are always recorded: any later chown of the host tree
        // (a copy, a backup tool) silently clears them.
        let needed = device.is_some()
            || !m.xattrs.is_empty()
            || m.uid != 0
            || m.gid != 0
            || m.perm & 0o7000 != 0
            || (type_bits != S_IFLNK && host_perm != m.perm);
        if needed {
            let perm = if type_bits == S_IFLNK { 0o777 } else { m.perm };
            let f = self.fixup(
                type_bits | perm,
                m.uid,
                m.gid,
                device,
                m.mtime.tv_sec,
                m.xattrs.clone(),
            );
            self.fixups.set(key, f);
        } else {
            // Only this path's own record: a directory entry that restates an existing
            // directory (later layers do, for the parents of what they change) keeps
            // its children and their records. Replacement is clear_slot's business.
            self.fixups.remove(key);
        }
    }

    /// Owner, mode and xattrs of an open file or directory.
    fn meta_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        key: &str,
        type_bits: u32,
        m: &EntryMeta,
    ) -> Result<(), ApplyError> {
        let perm = self.host_perm(type_bits, m.perm);
        if self.native {
            fchown(
                fd,
                Some(Uid::from_raw_unchecked(m.uid)),
                Some(Gid::from_raw_unchecked(m.gid)),
            )
            .map_err(|e| self.io("chown", key, e.into()))?;
        }
        // After chown: chown clears setuid/setgid.
        fchmod(fd, Mode::from_raw_mode(perm)).map_err(|e| self.io("chmod", key, e.into()))?;
        if self.native {
            for (name, value) in &m.xattrs {
                fsetxattr(fd, name.as_str(), value, XattrFlags::empty())
                    .map_err(|e| self.io("set xattr on", key, e.into()))?;
            }
        }
        self.record(key, type_bits, perm, m, None);
        Ok(())
    }
}
