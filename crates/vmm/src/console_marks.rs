//! When the console's bytes were written, for `vm logs --since`.
//!
//! The VMM writes the console log itself (and keeps writing while the daemon is
//! down), so nothing stamps its lines. Instead the daemon's monitor samples the
//! log's length every few seconds and, when it grew, appends a mark `SECS LEN` (unix
//! seconds, bytes) to `console.marks` beside it. Bytes past a mark's length were
//! written after its time, so `--since T` starts at the last mark taken at or before
//! T: precise to one monitor interval, and never skipping a line written after T.
//!
//! The marks file is banger's own, but still read as untrusted: bounded, malformed
//! lines skipped. It is capped by thinning (every other mark dropped), which keeps
//! the whole history at a coarser grain, and restarted when the log is rotated or
//! recreated (its offsets would no longer mean anything).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The most bytes the marks file holds before it is thinned (~2,700 marks).
pub const MARKS_CAP: u64 = 64 * 1024;

/// The marks file beside the console log `log`.
pub fn marks_path(log: &Path) -> PathBuf {
    log.with_file_name("console.marks")
}

/// One mark: at unix second `secs` the log was `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Unix seconds.
    pub secs: i64,
    /// The log's length then.
    pub len: u64,
}

fn parse(text: &str) -> Vec<Mark> {
    text.lines()
        .filter_map(|l| {
            let (s, n) = l.split_once(' ')?;
            Some(Mark {
                secs: s.parse().ok()?,
                len: n.parse().ok()?,
            })
        })
        .collect()
}

/// The marks recorded for `log` (at most [`MARKS_CAP`] bytes of them are read).
pub fn read(log: &Path) -> Vec<Mark> {
    let Ok(f) = super::console::open_nofollow(&marks_path(log)) else {
        return Vec::new();
    };
    let mut s = String::new();
    let _ = f.take(MARKS_CAP).read_to_string(&mut s);
    parse(&s)
}

/// The newest mark, from the file's last bytes (the monitor samples every VM every
/// few seconds; only thinning needs the whole file). A mark line is at most 41 bytes.
fn last(log: &Path) -> Option<Mark> {
    let tail = super::console::file_tail(&marks_path(log), 64);
    parse(&String::from_utf8_lossy(&tail)).pop()
}

fn write_all(path: &Path, marks: &[Mark]) -> std::io::Result<()> {
    let text: String = marks
        .iter()
        .map(|m| format!("{} {}\n", m.secs, m.len))
        .collect();
    super::console::replace_file(path, &path.with_extension("marks.tmp"), text.as_bytes())
}

/// Start the marks over: the log was just created or rotated, so it was empty at
/// `secs`.
pub fn reset(log: &Path, secs: i64) -> std::io::Result<()> {
    write_all(&marks_path(log), &[Mark { secs, len: 0 }])
}

/// Record the log's current length at `secs` if it changed since the last mark
/// (a shorter log than marked means it was rotated or recreated: start over).
pub fn sample(log: &Path, secs: i64) -> std::io::Result<()> {
    sample_capped(log, secs, MARKS_CAP)
}

fn sample_capped(log: &Path, secs: i64, cap: u64) -> std::io::Result<()> {
    let len = match std::fs::symlink_metadata(log) {
        Ok(m) if m.is_file() => m.len(),
        _ => return Ok(()),
    };
    let path = marks_path(log);
    match last(log) {
        Some(last) if last.len == len => return Ok(()),
        Some(last) if last.len > len => {
            return write_all(&path, &[Mark { secs, len: 0 }, Mark { secs, len }])
        }
        _ => {}
    }
    let size = std::fs::symlink_metadata(&path)
        .map(|m| m.len())
        .unwrap_or(0);
    if size + 32 > cap {
        // Thin: every other mark, always keeping the first (the log's start).
        let mut kept: Vec<Mark> = read(log).iter().step_by(2).copied().collect();
        kept.push(Mark { secs, len });
        return write_all(&path, &kept);
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    f.write_all(format!("{secs} {len}\n").as_bytes())
}

/// Where `vm logs --since secs` starts reading `log`: the length at the last mark
/// taken at or before `secs` (0 when there is none), moved back to the start of
/// the line it falls in.
pub fn offset_since(log: &Path, secs: i64) -> u64 {
    let marks = read(log);
    let at = marks
        .iter()
        .rev()
        .find(|m| m.secs <= secs)
        .map_or(0, |m| m.len);
    line_start(log, at)
}

/// `at`, moved back to just after the newline before it (looking at most 4 KiB back).
fn line_start(log: &Path, at: u64) -> u64 {
    if at == 0 {
        return 0;
    }
    let Ok(mut f) = super::console::open_nofollow(log) else {
        return 0;
    };
    let from = at.saturating_sub(4096);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return at;
    }
    let mut buf = Vec::new();
    if f.take(at - from).read_to_end(&mut buf).is_err() {
        return at;
    }
    match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_starts_at_the_last_mark_before_it_on_a_line_boundary() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        std::fs::write(&log, "").unwrap();
        reset(&log, 100).unwrap();
        std::fs::write(&log, "boot 1\nboot 2\n").unwrap();
        sample(&log, 102).unwrap();
        sample(&log, 104).unwrap(); // unchanged: no mark
        std::fs::write(&log, "boot 1\nboot 2\nlater\npart").unwrap();
        sample(&log, 110).unwrap();
        assert_eq!(
            read(&log),
            vec![
                Mark { secs: 100, len: 0 },
                Mark { secs: 102, len: 14 },
                Mark { secs: 110, len: 24 }
            ]
        );
        assert_eq!(offset_since(&log, 50), 0);
        assert_eq!(offset_since(&log, 101), 0);
        assert_eq!(offset_since(&log, 105), 14);
        // Mid-line: back to the line's start.
        assert_eq!(offset_since(&log, 200), 20);
        // A shorter log (recreated): the marks start over.
        std::fs::write(&log, "new\n").unwrap();
        sample(&log, 300).unwrap();
        assert_eq!(offset_since(&log, 299), 0);
        assert_eq!(offset_since(&log, 300), 4);
    }

    #[test]
    fn the_marks_file_is_thinned_not_grown() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        reset(&log, 0).unwrap();
        for i in 1..500u64 {
            std::fs::write(&log, vec![b'x'; i as usize]).unwrap();
            sample_capped(&log, i as i64, 1024).unwrap();
        }
        let size = std::fs::metadata(marks_path(&log)).unwrap().len();
        assert!(size <= 1024, "{size}");
        let m = read(&log);
        assert_eq!(m[0], Mark { secs: 0, len: 0 });
        assert_eq!(m.last().unwrap().len, 499);
        assert!(m.len() > 40, "{} marks", m.len());
        assert!(m.windows(2).all(|w| w[0].secs < w[1].secs));
    }

    #[test]
    fn junk_lines_are_skipped() {
        assert_eq!(
            parse("1 2\nnonsense\n-5 x\n3 4\n"),
            vec![Mark { secs: 1, len: 2 }, Mark { secs: 3, len: 4 }]
        );
    }
}
