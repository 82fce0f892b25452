//! File transfer sessions: unpack a tar stream into a directory (put), send a tar
//! stream of a path (get). Workspaces and `vm cp` ride on these instead of ssh.
//!
//! Unpacking goes through the tar crate's `unpack_in`, which refuses entries that
//! would land outside the directory (absolute paths, `..`, paths through a symlink
//! the archive planted). Directories are finished last, deepest first, so a read-only
//! directory still receives its files. Archiving never follows symlinks and skips
//! sockets (which have no tar form).

use banger_channel::sync::Session;
use banger_channel::{Control, Done, ErrorKind, ErrorReply, Get, Put, Stream};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

fn failed(what: &str, e: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorKind::Failed, format!("{what}: {e}"))
}

/// Counts what passes through.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpack the session's input into `req.dir`.
pub fn put(req: &Put, session: &Session) -> Result<Done, ErrorReply> {
    if !req.dir.starts_with('/') {
        return Err(ErrorReply::new(
            ErrorKind::Invalid,
            format!("{:?} is not an absolute path", req.dir),
        ));
    }
    let dir = Path::new(&req.dir);
    std::fs::create_dir_all(dir).map_err(|e| failed(&format!("creating {}", req.dir), e))?;
    let _ = session.send(&Control::Started { pid: None });
    let mut ar = tar::Archive::new(Counting {
        inner: session.reader(),
        bytes: 0,
    });
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_preserve_ownerships(req.preserve_owner);
    ar.set_overwrite(true);
    let unpack =
        |what: &str, e: io::Error| failed(&format!("unpacking into {}: {what}", req.dir), e);
    let mut done = Done::default();
    let mut dirs = Vec::new();
    for entry in ar.entries().map_err(|e| unpack("reading the archive", e))? {
        let mut entry = entry.map_err(|e| unpack("reading the archive", e))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if entry.header().entry_type() == tar::EntryType::Directory {
            dirs.push(entry);
            continue;
        }
        done.bytes += entry.size();
        if entry.unpack_in(dir).map_err(|e| unpack(&name, e))? {
            done.entries += 1;
        }
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        let name = d
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if d.unpack_in(dir).map_err(|e| unpack(&name, e))? {
            done.entries += 1;
        }
    }
    // Drain the end-of-archive blocks so the opener's stream completes.
    let mut rest = ar.into_inner();
    let _ = io::copy(&mut rest, &mut io::sink());
    Ok(done)
}

/// Send a tar of `req.path` on the session's stdout.
pub fn get(req: &Get, session: &Session) -> Result<Done, ErrorReply> {
    let path = Path::new(&req.path);
    if !req.path.starts_with('/') {
        return Err(ErrorReply::new(
            ErrorKind::Invalid,
            format!("{:?} is not an absolute path", req.path),
        ));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Failed
        };
        ErrorReply::new(kind, format!("{}: {e}", req.path))
    })?;
    let _ = session.send(&Control::Started { pid: None });
    let top = path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut b = tar::Builder::new(session.writer(Stream::Out));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut done = Done::default();
    let mut stack = vec![(path.to_path_buf(), top, meta)];
    while let Some((src, name, meta)) = stack.pop() {
        let ft = meta.file_type();
        if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            continue;
        }
        b.append_path_with_name(&src, &name)
            .map_err(|e| failed(&format!("archiving {}", src.display()), e))?;
        done.entries += 1;
        if ft.is_file() {
            done.bytes += meta.len();
        }
        if ft.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&src)
                .map_err(|e| failed(&format!("listing {}", src.display()), e))?
                .filter_map(Result::ok)
                .collect();
            // Reverse order on the stack: archived in name order.
            children.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
            for c in children {
                let m = c
                    .metadata()
                    .map_err(|e| failed(&format!("reading {}", c.path().display()), e))?;
                stack.push((c.path(), name.join(c.file_name()), m));
            }
        }
    }
    let mut w = b
        .into_inner()
        .map_err(|e| failed("finishing the archive", e))?;
    w.flush().map_err(|e| failed("sending the archive", e))?;
    session
        .eof(Stream::Out)
        .map_err(|e| failed("sending the archive", e))?;
    Ok(done)
}
