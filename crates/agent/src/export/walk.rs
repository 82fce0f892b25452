//! The tree walk of an export: every entry of the merged tree into the tar, hard
//! links by (device, inode), and a prefetch thread that reads ahead of the walk.
//! Split from `export.rs`, which keeps the disk discovery, mounts and the export
//! disk's layout.

use super::{other, DiskOut, Stats, PREFETCH_AHEAD};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
pub(super) struct Walker {
    pub(super) tar: tar::Builder<DiskOut>,
    /// File data written so far, for the prefetch thread's throttle.
    pub(super) consumed: Arc<AtomicU64>,
    /// Archive name of the first path seen for each multiply-linked inode.
    pub(super) links: HashMap<(u64, u64), PathBuf>,
    pub(super) stats: Stats,
}

impl Walker {
    pub(super) fn new(out: DiskOut) -> Walker {
        Walker {
            tar: tar::Builder::new(out),
            consumed: Arc::default(),
            links: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// The tree at `top` as `name` (`.` for the root), with `graft` (the work disk) as
    /// its `root` directory when given.
    pub(super) fn tree(&mut self, top: &Path, name: &Path, graft: Option<&Path>) -> io::Result<()> {
        let md = std::fs::symlink_metadata(top)
            .map_err(|e| other(format!("stat {}: {e}", top.display())))?;
        self.directory(top, name, &md, graft, true)
    }

    /// A directory and everything below it. `fs_root`: it is the root of a filesystem,
    /// whose `lost+found` is skipped.
    pub(super) fn directory(
        &mut self,
        src: &Path,
        name: &Path,
        md: &std::fs::Metadata,
        graft: Option<&Path>,
        fs_root: bool,
    ) -> io::Result<()> {
        let tar_name = if name == Path::new(".") {
            PathBuf::from("./")
        } else {
            name.to_path_buf()
        };
        self.header_only(tar::EntryType::Directory, &tar_name, md)?;
        self.stats.entries += 1;
        let top_level = name == Path::new(".");
        let mut children: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| other(format!("list {}: {e}", src.display())))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| other(format!("list {}: {e}", src.display())))?;
        children.sort();
        for child in children {
            if top_level && graft.is_some() && child == "root" {
                continue; // replaced by the work disk below
            }
            if fs_root && child == "lost+found" {
                self.stats.skipped += 1;
                continue;
            }
            let path = src.join(&child);
            let cname = if top_level {
                PathBuf::from(&child)
            } else {
                name.join(&child)
            };
            let cmd = std::fs::symlink_metadata(&path)
                .map_err(|e| other(format!("stat {}: {e}", path.display())))?;
            if cmd.is_dir() && cmd.dev() != md.dev() {
                // Another mount (none is expected): never crossed.
                self.stats.skipped += 1;
                continue;
            }
            self.entry(&path, &cname, &cmd)?;
        }
        if let Some(work) = graft {
            let wmd = std::fs::symlink_metadata(work)
                .map_err(|e| other(format!("stat {}: {e}", work.display())))?;
            self.directory(work, Path::new("root"), &wmd, None, true)?;
        }
        Ok(())
    }

    pub(super) fn entry(
        &mut self,
        src: &Path,
        name: &Path,
        md: &std::fs::Metadata,
    ) -> io::Result<()> {
        let ft = md.file_type();
        if ft.is_dir() {
            return self.directory(src, name, md, None, false);
        }
        if ft.is_socket() {
            self.stats.skipped += 1;
            return Ok(());
        }
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                let mut h = header(tar::EntryType::Link, md);
                let first = first.clone();
                self.tar
                    .append_link(&mut h, name, &first)
                    .map_err(|e| other(format!("write {}: {e}", name.display())))?;
                self.stats.entries += 1;
                return Ok(());
            }
        }
        if ft.is_file() {
            let len = md.len();
            let mut file = open_data(src)?;
            let mut h = header(tar::EntryType::Regular, md);
            h.set_size(len);
            let werr = |e: io::Error| other(format!("write {}: {e}", name.display()));
            // The header (and any long-name entry) alone: `append` pads by what it
            // copied, which is nothing; the data and its padding follow here.
            self.tar
                .append_data(&mut h, name, io::empty())
                .map_err(werr)?;
            let out = self.tar.get_mut();
            out.copy_file(&mut file, len).map_err(werr)?;
            let pad = (512 - len % 512) % 512;
            out.write_all(&[0u8; 512][..pad as usize]).map_err(werr)?;
            self.consumed.fetch_add(len, Ordering::Relaxed);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src)
                .map_err(|e| other(format!("read link {}: {e}", src.display())))?;
            let mut h = header(tar::EntryType::Symlink, md);
            self.tar
                .append_link(&mut h, name, &target)
                .map_err(|e| other(format!("write {}: {e}", name.display())))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            self.header_only(kind, name, md)?;
        } else {
            self.stats.skipped += 1;
            return Ok(());
        }
        self.stats.entries += 1;
        if md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), name.to_path_buf());
        }
        Ok(())
    }

    /// Directories, devices and fifos: a header and no data.
    pub(super) fn header_only(
        &mut self,
        kind: tar::EntryType,
        name: &Path,
        md: &std::fs::Metadata,
    ) -> io::Result<()> {
        let mut h = header(kind, md);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let rdev = md.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
        }
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(|e| other(format!("write {}: {e}", name.display())))
    }
}

/// Open a file to archive, never following a symlink.
pub(super) fn open_data(src: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|e| other(format!("open {}: {e}", src.display())))
}

/// Walks the tree in the writer's order, a little ahead of it, asking the kernel to
/// read each file in the background (`POSIX_FADV_WILLNEED`) and warming directory
/// and inode caches on the way: the writer then rarely waits for a disk. Best effort:
/// errors are the writer's to report.
pub(super) struct Prefetch {
    pub(super) consumed: Arc<AtomicU64>,
    pub(super) stop: Arc<AtomicBool>,
    /// File data asked for so far (each multiply-linked inode once, as the writer).
    pub(super) ahead: u64,
    pub(super) links: std::collections::HashSet<(u64, u64)>,
}

impl Prefetch {
    pub(super) fn start(
        top: PathBuf,
        graft: Option<PathBuf>,
        consumed: Arc<AtomicU64>,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Prefetch {
            consumed,
            stop: stop.clone(),
            ahead: 0,
            links: Default::default(),
        };
        let h = std::thread::spawn(move || {
            p.dir(&top, graft.is_some());
            if let Some(g) = graft {
                p.dir(&g, false);
            }
        });
        (stop, h)
    }

    pub(super) fn dir(&mut self, dir: &Path, skip_root: bool) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if skip_root && name == "root" {
                continue;
            }
            let path = dir.join(&name);
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                self.dir(&path, false);
            } else if md.is_file()
                && md.len() > 0
                && (md.nlink() == 1 || self.links.insert((md.dev(), md.ino())))
            {
                while self.ahead > self.consumed.load(Ordering::Relaxed) + PREFETCH_AHEAD {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                if let Ok(f) = open_data(&path) {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid descriptor; advice only.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
                }
                self.ahead += md.len();
            }
        }
    }
}

pub(super) fn header(kind: tar::EntryType, md: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid().into());
    h.set_gid(md.gid().into());
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    h
}
