//! `banger.mode=export`: flatten a VM's disks into one tar stream, inside a throw-away
//! guest.
//!
//! The disks were written by the guest, so the host must not mount or parse them.
//! Instead banger boots its own kernel and initrd on them with `banger.mode=export`;
//! this init mounts them read-only, lets the guest kernel merge the overlay (its
//! whiteouts and opaque directories), and writes the merged tree as a tar onto a raw
//! *export disk*, which the host then applies with its hostile-content-proof tar
//! applier (`banger_image::export`).
//!
//! Export disk layout (the host creates it; it is found by its magic, not by position):
//!
//! | offset | what |
//! |---|---|
//! | 0 | [`MAGIC`], written by the host |
//! | 64 | tar length, little-endian u64, written by this guest |
//! | 512 | status: `OK\n` or `ERR <message>\n` (at most 3 KiB), written last |
//! | 4096 | the tar stream |
//!
//! The tar holds the merged `/` with the work disk grafted at `/root`: modes, owners,
//! mtimes, symlinks (never followed), hard links (files with nlink > 1 are tracked by
//! device and inode), device nodes and fifos. Sockets are skipped, and so is each
//! filesystem's own `lost+found` (mkfs makes a new one). Extended attributes are
//! **not** carried: file capabilities (`security.capability`, e.g. on `ping`), ACLs
//! and SELinux labels of the VM are lost in the new image. Paths longer than
//! PATH_MAX (4096 bytes) make the export fail.
//!
//! Speed (this runs under TCG on hosts without usable KVM): a prefetch thread walks
//! a little ahead asking the kernel to read upcoming files, file data goes straight
//! from `read` into 4 MiB aligned blocks written with O_DIRECT, and the console gets
//! a summary (time reading, time writing). A 650 MiB Debian tree takes ~11 s under
//! TCG.

use crate::init::{ext4_label, log, LABEL_OVERLAY, LABEL_ROOT, LABEL_WORK};
use crate::sys;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first bytes of an export disk (written by the host).
pub const MAGIC: &[u8; 16] = banger_contract::export::MAGIC;
/// Offset of the little-endian u64 tar length.
const LEN_OFFSET: u64 = 64;
/// Offset of the status line.
const STATUS_OFFSET: u64 = 512;
/// Where the tar stream starts (the header's size).
const DATA_OFFSET: u64 = 4096;
/// Longest status message kept (the status region is 3.5 KiB).
const MAX_MESSAGE: usize = 3 * 1024;

/// How far (in file data) the prefetch thread may run ahead of the tar writer.
const PREFETCH_AHEAD: u64 = 64 << 20;

const LOWER: &str = "/mnt/lower";
const UPPER: &str = "/mnt/upper";
const WORK: &str = "/mnt/work";
const MERGED: &str = "/mnt/merged";

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The disks of an export boot.
#[derive(Debug, Default)]
struct Disks {
    root: Option<PathBuf>,
    overlay: Option<PathBuf>,
    work: Option<PathBuf>,
    /// Every disk that starts with [`MAGIC`] (exactly one is expected).
    export: Vec<PathBuf>,
    /// Labels carried by more than one disk.
    duplicates: Vec<String>,
}

fn has_magic(dev: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(dev)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .is_ok()
        && &head == MAGIC
}

fn scan() -> Disks {
    let mut d = Disks::default();
    for dev in crate::init::block_devices() {
        if has_magic(&dev) {
            d.export.push(dev);
            continue;
        }
        let Ok(Some(label)) = ext4_label(&dev) else {
            continue;
        };
        let slot = match label.as_str() {
            LABEL_ROOT => &mut d.root,
            LABEL_OVERLAY => &mut d.overlay,
            LABEL_WORK => &mut d.work,
            _ => continue,
        };
        if slot.is_some() {
            d.duplicates.push(label);
        } else {
            *slot = Some(dev);
        }
    }
    d
}

/// Poll until the root and the export disk are there (virtio-blk probes every disk
/// while its module loads, so the optional ones are there too by then).
fn find(timeout: Duration) -> Disks {
    let t = Instant::now();
    loop {
        let d = scan();
        if (d.root.is_some() && !d.export.is_empty()) || t.elapsed() > timeout {
            return d;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Export the disks, report on the export disk, and return (the caller powers off).
pub fn run() -> io::Result<()> {
    let t = Instant::now();
    let disks = find(Duration::from_secs(10));
    let export = match disks.export.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(other(format!(
                "export: no export disk (a disk starting with {:?}) was attached",
                String::from_utf8_lossy(MAGIC)
            )))
        }
        many => {
            // Writing a status onto a disk that may be the VM's own would damage it.
            return Err(other(format!(
                "export: {} disks carry the export magic ({many:?}); refusing to choose",
                many.len()
            )));
        }
    };
    let mut out = ExportDisk::open(&export)?;
    log(&format!("exporting onto {}", export.display()));
    match export_tree(&disks, &mut out) {
        Ok(stats) => {
            out.finish(&stats)?;
            log(&format!(
                "export done: {} entries ({} skipped), {} tar bytes in {:.1} s",
                stats.entries,
                stats.skipped,
                stats.tar_len,
                t.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(e) => {
            let e = other(format!("export: {e}"));
            if let Err(w) = out.fail(&e.to_string()) {
                log(&format!(
                    "could not write the error onto the export disk: {w}"
                ));
            }
            Err(e)
        }
    }
}

/// What the walk produced.
#[derive(Debug, Default)]
struct Stats {
    entries: u64,
    skipped: u64,
    tar_len: u64,
}

/// ext4 mount flags: read-only, and nothing on it is used as a device, setuid or code.
fn ro() -> libc::c_ulong {
    libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC
}

/// Mount an ext4 disk read-only. A read-only attached disk with a dirty journal cannot
/// be replayed, so that case falls back to `noload` (the last unreplayed writes are
/// then missing, which is what the disk says anyway).
fn mount_ro(dev: &Path, at: &str) -> io::Result<()> {
    let src = dev.display().to_string();
    match sys::mount(&src, Path::new(at), "ext4", ro(), None) {
        Ok(()) => Ok(()),
        Err(first) => {
            log(&format!(
                "{first}; retrying without journal replay (noload)"
            ));
            sys::mount(&src, Path::new(at), "ext4", ro(), Some("noload")).map_err(|_| first)
        }
    }
}

fn export_tree(disks: &Disks, out: &mut ExportDisk) -> io::Result<Stats> {
    if let Some(l) = disks.duplicates.first() {
        return Err(other(format!(
            "more than one disk is labelled {l}; attach each of banger's disks once"
        )));
    }
    let root = disks
        .root
        .as_ref()
        .ok_or_else(|| other(format!("no disk labelled {LABEL_ROOT} was attached")))?;
    for d in [LOWER, UPPER, WORK, MERGED] {
        std::fs::create_dir_all(d)?;
    }
    mount_ro(root, LOWER)?;
    let mut top = PathBuf::from(LOWER);
    if let Some(overlay) = &disks.overlay {
        mount_ro(overlay, UPPER)?;
        if Path::new(UPPER).join("upper").is_dir() {
            // No upperdir: a read-only overlay of two lower layers, in which the
            // kernel applies the VM's whiteouts and opaque directories.
            sys::mount(
                "overlay",
                Path::new(MERGED),
                "overlay",
                libc::MS_RDONLY,
                Some(&format!("lowerdir={UPPER}/upper:{LOWER}")),
            )?;
            top = PathBuf::from(MERGED);
        } else {
            log("the overlay disk has no upper/ directory: exporting the base alone");
        }
    }
    let work = match &disks.work {
        Some(w) => {
            mount_ro(w, WORK)?;
            Some(PathBuf::from(WORK))
        }
        None => None,
    };
    log(&format!(
        "mounted: root {}, overlay {}, work {}",
        root.display(),
        disks
            .overlay
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
        disks
            .work
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    ));

    let direct = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&out.path)
        .map_err(|e| {
            other(format!(
                "open {} for direct writes: {e}",
                out.path.display()
            ))
        })?;
    let sink = DiskOut::new(direct, DATA_OFFSET, out.size.saturating_sub(DATA_OFFSET));
    let mut w = Walker::new(sink);
    let (stop, prefetch) = Prefetch::start(top.clone(), work.clone(), w.consumed.clone());
    let walked = w.tree(&top, Path::new("."), work.as_deref());
    stop.store(true, Ordering::Relaxed);
    let _ = prefetch.join();
    walked?;
    let stats = w.stats;
    let out = w.tar.into_inner()?;
    log(&format!(
        "file data: {:.1} s reading, {:.1} s writing the export disk",
        out.reading.as_secs_f64(),
        out.writing.as_secs_f64()
    ));
    let tar_len = out.finish()?;
    Ok(Stats { tar_len, ..stats })
}

/// The export disk, open for writing.
struct ExportDisk {
    path: PathBuf,
    file: File,
    size: u64,
}

impl ExportDisk {
    fn open(path: &Path) -> io::Result<ExportDisk> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| other(format!("open export disk {}: {e}", path.display())))?;
        let size = file.seek(SeekFrom::End(0))?;
        Ok(ExportDisk {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    /// The tar is on the disk: make it durable, then record its length and `OK`.
    fn finish(&mut self, stats: &Stats) -> io::Result<()> {
        self.file.sync_all()?;
        self.status(stats.tar_len, "OK\n")
    }

    fn fail(&mut self, message: &str) -> io::Result<()> {
        let mut m: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if m.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
        }
        self.status(0, &format!("ERR {m}\n"))
    }

    fn status(&mut self, tar_len: u64, line: &str) -> io::Result<()> {
        self.file.write_all_at(&tar_len.to_le_bytes(), LEN_OFFSET)?;
        self.file.write_all_at(line.as_bytes(), STATUS_OFFSET)?;
        self.file.sync_all()
    }
}

/// Bytes per write to the export disk.
const BLOCK: usize = 4 << 20;

/// The tar's destination: the export disk, written with O_DIRECT in aligned 4 MiB
/// blocks (large writes that leave the page cache to the files being read). File
/// data is read straight into the block, so under TCG, where every guest instruction
/// is emulated, each byte is copied once by the guest (out of the page cache) and
/// moved by QEMU otherwise. Counts what is written and refuses to go past the
/// disk's end.
struct DiskOut {
    file: File,
    /// `BLOCK` bytes from `start`, 4 KiB aligned.
    mem: Vec<u8>,
    start: usize,
    /// Bytes filled in the block.
    pos: usize,
    /// Disk offset of the block.
    offset: u64,
    written: u64,
    cap: u64,
    /// Time spent reading file data and writing blocks (for the console's summary).
    reading: Duration,
    writing: Duration,
}

impl DiskOut {
    /// Write through `file` from `offset` (4 KiB aligned), at most `cap` bytes.
    fn new(file: File, offset: u64, cap: u64) -> DiskOut {
        let mem = vec![0u8; BLOCK + 4096];
        let start = mem.as_ptr().align_offset(4096);
        DiskOut {
            file,
            mem,
            start,
            pos: 0,
            offset,
            written: 0,
            cap,
            reading: Duration::ZERO,
            writing: Duration::ZERO,
        }
    }

    fn block(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + BLOCK]
    }

    /// Fail unless `n` more bytes fit.
    fn reserve(&self, n: u64) -> io::Result<()> {
        if self.written.saturating_add(n) > self.cap {
            return Err(other(format!(
                "the export disk is full: the tree needs more than its {} bytes; give it a larger export disk",
                self.cap
            )));
        }
        Ok(())
    }

    /// Write the filled part of the block, rounded up to whole sectors with zeros.
    fn flush_block(&mut self) -> io::Result<()> {
        let (pos, n) = (self.pos, self.pos.next_multiple_of(512));
        self.block()[pos..n].fill(0);
        let (start, offset) = (self.start, self.offset);
        let t = Instant::now();
        self.file
            .write_all_at(&self.mem[start..start + n], offset)?;
        self.writing += t.elapsed();
        self.offset += n as u64;
        self.pos = 0;
        Ok(())
    }

    /// Write what is left; returns the tar length.
    fn finish(mut self) -> io::Result<u64> {
        if self.pos > 0 {
            self.flush_block()?;
        }
        Ok(self.written)
    }

    /// Append exactly `len` bytes of `file`, read straight into the block; a file that
    /// ends early is an error, never a short entry.
    fn copy_file(&mut self, file: &mut File, len: u64) -> io::Result<()> {
        self.reserve(len)?;
        let mut left = len;
        while left > 0 {
            if self.pos == BLOCK {
                self.flush_block()?;
            }
            let room = (BLOCK - self.pos) as u64;
            let want = room.min(left) as usize;
            let pos = self.pos;
            let t = Instant::now();
            let n = loop {
                match file.read(&mut self.block()[pos..pos + want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.reading += t.elapsed();
            if n == 0 {
                return Err(other("file ended before its size".into()));
            }
            let n = n as u64;
            self.pos += n as usize;
            self.written += n;
            left -= n;
        }
        Ok(())
    }
}

impl Write for DiskOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reserve(buf.len() as u64)?;
        if self.pos == BLOCK {
            self.flush_block()?;
        }
        let n = buf.len().min(BLOCK - self.pos);
        let pos = self.pos;
        self.block()[pos..pos + n].copy_from_slice(&buf[..n]);
        self.pos += n;
        self.written += n as u64;
        Ok(n)
    }
    /// Blocks are written whole; [`DiskOut::finish`] writes the last one.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Walker {
    tar: tar::Builder<DiskOut>,
    /// File data written so far, for the prefetch thread's throttle.
    consumed: Arc<AtomicU64>,
    /// Archive name of the first path seen for each multiply-linked inode.
    links: HashMap<(u64, u64), PathBuf>,
    stats: Stats,
}

impl Walker {
    fn new(out: DiskOut) -> Walker {
        Walker {
            tar: tar::Builder::new(out),
            consumed: Arc::default(),
            links: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// The tree at `top` as `name` (`.` for the root), with `graft` (the work disk) as
    /// its `root` directory when given.
    fn tree(&mut self, top: &Path, name: &Path, graft: Option<&Path>) -> io::Result<()> {
        let md = std::fs::symlink_metadata(top)
            .map_err(|e| other(format!("stat {}: {e}", top.display())))?;
        self.directory(top, name, &md, graft, true)
    }

    /// A directory and everything below it. `fs_root`: it is the root of a filesystem,
    /// whose `lost+found` is skipped.
    fn directory(
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

    fn entry(&mut self, src: &Path, name: &Path, md: &std::fs::Metadata) -> io::Result<()> {
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
    fn header_only(
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
fn open_data(src: &Path) -> io::Result<File> {
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
struct Prefetch {
    consumed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// File data asked for so far (each multiply-linked inode once, as the writer).
    ahead: u64,
    links: std::collections::HashSet<(u64, u64)>,
}

impl Prefetch {
    fn start(
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

    fn dir(&mut self, dir: &Path, skip_root: bool) {
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

fn header(kind: tar::EntryType, md: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid().into());
    h.set_gid(md.gid().into());
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The tar of `top` (with `graft`), written through a [`DiskOut`] onto a file.
    fn tar_of(top: &Path, graft: Option<&Path>) -> Vec<u8> {
        let at = top.with_extension("tar");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&at)
            .unwrap();
        let mut w = Walker::new(DiskOut::new(f, 0, u64::MAX));
        w.tree(top, Path::new("."), graft).unwrap();
        let len = w.tar.into_inner().unwrap().finish().unwrap();
        let bytes = std::fs::read(&at).unwrap();
        std::fs::remove_file(&at).unwrap();
        assert_eq!(len, bytes.len() as u64);
        bytes
    }

    fn walk(top: &Path, graft: Option<&Path>) -> Vec<(String, tar::EntryType, Option<String>)> {
        let bytes = tar_of(top, graft);
        let mut a = tar::Archive::new(&bytes[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                (name, e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn walks_a_tree_with_links_devices_and_a_grafted_root() {
        let d = std::env::temp_dir().join(format!("banger-export-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (top, work) = (d.join("top"), d.join("work"));
        for p in [
            top.join("a/deep"),
            top.join("lost+found"),
            top.join("root"),
            work.join("lost+found"),
        ] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(top.join("a/f"), b"hello").unwrap();
        std::fs::set_permissions(top.join("a/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(top.join("a/f"), top.join("a/g")).unwrap();
        std::os::unix::fs::symlink("../nowhere", top.join("a/l")).unwrap();
        std::fs::write(top.join("a/.wh.x"), b"").unwrap();
        std::fs::write(top.join("root/hidden"), b"").unwrap();
        let long = "n".repeat(150);
        std::fs::write(top.join("a/deep").join(&long), b"long").unwrap();
        let fifo = std::ffi::CString::new(top.join("p").to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let _sock = std::os::unix::net::UnixListener::bind(top.join("s")).unwrap();
        std::fs::write(work.join("wf"), b"work").unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        std::fs::write(top.join("a/big"), &big).unwrap();

        let got = walk(&top, Some(&work));
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        use tar::EntryType as T;
        assert_eq!(got[0].0, "./");
        assert!(names.contains(&"a/.wh.x"));
        assert!(names.contains(&format!("a/deep/{long}").as_str()));
        assert!(names.contains(&"root/wf"));
        assert!(!names.iter().any(|n| n.contains("lost+found")), "{names:?}");
        assert!(
            !names.contains(&"root/hidden"),
            "the work disk replaces /root"
        );
        assert!(!names.contains(&"s"), "sockets are skipped");
        let find = |n: &str| got.iter().find(|(x, _, _)| x == n).unwrap().clone();
        assert_eq!(find("a/f").1, T::Regular);
        assert_eq!(find("a/g"), ("a/g".into(), T::Link, Some("a/f".into())));
        assert_eq!(
            find("a/l"),
            ("a/l".into(), T::Symlink, Some("../nowhere".into()))
        );
        assert_eq!(find("p").1, T::Fifo);
        assert_eq!(find("root").1, T::Directory);

        // Without a work disk, the tree's own /root stays.
        let names: Vec<String> = walk(&top, None).into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"root/hidden".to_string()));

        // File data (read straight into the block, padded by hand) is intact.
        let bytes = tar_of(&top, Some(&work));
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| &*e.path_bytes() == b"a/big")
            .unwrap();
        let mut data = vec![];
        e.read_to_end(&mut data).unwrap();
        assert!(data == big);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_full_disk_is_an_error_not_a_short_tar() {
        let at = std::env::temp_dir().join(format!("banger-export-full-{}", std::process::id()));
        let f = File::create(&at).unwrap();
        let mut out = DiskOut::new(f, 0, 10);
        out.write_all(b"12345678").unwrap();
        let e = out.write_all(b"abc").unwrap_err();
        assert!(e.to_string().contains("export disk is full"), "{e}");
        let mut src = File::open("/proc/self/exe").unwrap();
        assert!(out.copy_file(&mut src, 3).is_err());
        std::fs::remove_file(&at).unwrap();
    }
}
