//! A tar stream checked header by header *before* the tar crate parses it.
//!
//! The `tar` crate reads a GNU long name (`L`), long link (`K`) or PAX (`x`) entry
//! whole into memory (`read_all`), bounded only by the entry's size, and turns a GNU
//! sparse entry (`S`) into a list of blocks read from any number of extension
//! headers, expanding holes into real zeros on disk. In a zstd layer a few KiB
//! become gigabytes of "header". It has no knob to bound any of this, so [`Guard`]
//! sits between the decompressed stream and the tar reader and follows the same
//! framing (same header parser, same PAX `size` rule), refusing:
//!
//! - any `L`, `K`, `x` or `g` entry larger than [`MAX_HEADER_BYTES`];
//! - any GNU sparse entry. Decision: refused, not counted. Docker, containerd,
//!   buildkit and Go's `archive/tar` never write sparse entries, banger's export
//!   guest writes sparse files in full, and refusing also avoids the tar crate's
//!   unbounded list of sparse blocks. A rootfs tarball made with `tar --sparse`
//!   must be re-created without it (the error says so).
//!
//! The guard only sees bytes the tar reader asked for (it is the reader's direct
//! input), so both always agree on where a header starts.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

/// Largest GNU long-name/long-link or PAX extended header accepted. Real ones are
/// a path (at most 4 KiB) or a handful of records (xattrs: a few hundred bytes).
pub(crate) const MAX_HEADER_BYTES: u64 = 64 * 1024;

const BLOCK: u64 = 512;

/// What the guard refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// An extension header above [`MAX_HEADER_BYTES`].
    HeaderTooLarge {
        /// `GNU long name`, `PAX`, ...
        kind: &'static str,
        /// Its declared size.
        size: u64,
    },
    /// A GNU sparse entry.
    Sparse,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::HeaderTooLarge { kind, size } => write!(
                f,
                "a {kind} header of {size} bytes (more than {MAX_HEADER_BYTES} bytes is refused)"
            ),
            Violation::Sparse => f.write_str(
                "a GNU sparse file entry (sparse entries are refused: re-create the tar without --sparse)",
            ),
        }
    }
}

enum State {
    /// Collecting the next 512-byte header.
    Header,
    /// Inside an entry's data (with padding); PAX data is kept to learn `size`.
    Data {
        left: u64,
        pax: Option<(Vec<u8>, u64)>,
    },
    /// Past the end-of-archive block or a header the tar reader will refuse itself:
    /// nothing more is parsed (the reader stops there too).
    Done,
}

/// See the module docs. `violation` is set when the guard refused the stream, so
/// the caller can report the real cause after the tar reader wrapped the error.
pub(crate) struct Guard<R> {
    inner: R,
    state: State,
    header: [u8; BLOCK as usize],
    filled: usize,
    pax_size: Option<u64>,
    violation: Rc<Cell<Option<Violation>>>,
}

/// A guarded stream and the cell that tells why it was refused.
pub(crate) fn guard<R: Read>(inner: R) -> (Guard<R>, Rc<Cell<Option<Violation>>>) {
    let violation = Rc::new(Cell::new(None));
    let g = Guard {
        inner,
        state: State::Header,
        header: [0; BLOCK as usize],
        filled: 0,
        pax_size: None,
        violation: violation.clone(),
    };
    (g, violation)
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(v) = self.feed(&buf[..n]) {
            let msg = v.to_string();
            self.violation.set(Some(v));
            self.state = State::Done;
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
        }
        Ok(n)
    }
}

impl<R> Guard<R> {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header => {
                    let take = bytes.len().min(self.header.len() - self.filled);
                    self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
                    self.filled += take;
                    bytes = &bytes[take..];
                    if self.filled == self.header.len() {
                        self.filled = 0;
                        self.state = self.parse_header()?;
                    }
                }
                State::Data { left, pax } => {
                    let take = (bytes.len() as u64).min(*left) as usize;
                    if let Some((data, size)) = pax {
                        let want = (*size as usize).saturating_sub(data.len()).min(take);
                        data.extend_from_slice(&bytes[..want]);
                    }
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        if let Some((data, _)) = pax.take() {
                            self.pax_size = pax_size(&data);
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a complete header block, mirroring the tar crate's framing.
    fn parse_header(&mut self) -> Result<State, Violation> {
        if self.header.iter().all(|b| *b == 0) {
            // End of archive for the tar reader (it does not skip zero blocks).
            return Ok(State::Done);
        }
        let h = tar::Header::from_byte_slice(&self.header);
        let kind = h.entry_type();
        let Ok(mut size) = h.entry_size() else {
            // The tar reader refuses an unreadable size itself.
            return Ok(State::Done);
        };
        let extension = if kind.is_gnu_longname() {
            Some("GNU long name")
        } else if kind.is_gnu_longlink() {
            Some("GNU long link")
        } else if kind.is_pax_local_extensions() {
            Some("PAX extended")
        } else if kind.is_pax_global_extensions() {
            Some("PAX global")
        } else {
            None
        };
        match extension {
            Some(kind_name) => {
                if size > MAX_HEADER_BYTES {
                    return Err(Violation::HeaderTooLarge {
                        kind: kind_name,
                        size,
                    });
                }
            }
            None => {
                if kind.is_gnu_sparse() {
                    return Err(Violation::Sparse);
                }
                // A PAX `size` record overrides the header for the next real entry
                // (the tar crate applies it the same way).
                if let Some(s) = self.pax_size.take() {
                    size = s;
                }
            }
        }
        let Some(left) = size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1)) else {
            return Ok(State::Done);
        };
        let pax = kind
            .is_pax_local_extensions()
            .then(|| (Vec::with_capacity(size as usize), size));
        if left == 0 {
            if let Some((data, _)) = pax {
                self.pax_size = pax_size(&data);
            }
            return Ok(State::Header);
        }
        Ok(State::Data { left, pax })
    }
}

/// The `size` record of a PAX header, read exactly as the tar crate reads it (the
/// first `size` key; an unparsable record or value means none).
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn drain(bytes: &[u8]) -> Result<(), Option<Violation>> {
        let (mut g, v) = guard(bytes);
        let mut buf = vec![0u8; 700];
        loop {
            match g.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(v.take()),
            }
        }
    }

    #[test]
    fn an_oversized_long_name_is_refused_from_its_header() {
        // Only the header exists: the guard refuses before any data is read.
        let bytes = header(tar::EntryType::GNULongName, "././@LongLink", 1 << 40);
        assert_eq!(
            drain(&bytes),
            Err(Some(Violation::HeaderTooLarge {
                kind: "GNU long name",
                size: 1 << 40
            }))
        );
    }

    #[test]
    fn pax_size_moves_the_next_header() {
        // PAX says the next file has 1024 bytes though its header says 0: the guard
        // must skip 1024 bytes of data, and find the sparse header after it.
        let record = "13 size=1024\n";
        let mut b = header(tar::EntryType::XHeader, "pax", record.len() as u64);
        let mut data = record.as_bytes().to_vec();
        data.resize(512, 0);
        b.extend(data);
        b.extend(header(tar::EntryType::Regular, "f", 0));
        // 1024 bytes of file data that look like a sparse header: not a header.
        let fake = header(tar::EntryType::GNUSparse, "s", 0);
        b.extend(&fake);
        b.extend(&fake);
        assert_eq!(drain(&b), Ok(()));
        // Right after them, a real sparse header is refused.
        b.extend(&fake);
        assert_eq!(drain(&b), Err(Some(Violation::Sparse)));
    }
}
