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
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
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

mod walk;
use walk::{Prefetch, Walker};

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
