//! A guest kernel that never reaches banger's init, restarted once.
//!
//! Under TCG the guest kernel occasionally stops making progress between its early
//! setup and running the initrd's init (seen once in CI over a few hundred boots:
//! the console ended at the kernel's first lines and the agent never answered in
//! 180 s, where init normally starts 3–6 s after the kernel). Nothing in the guest
//! can be done about it then, and a user would rather wait a few more seconds than
//! see `vm run` fail: when a boot with banger's initrd has not printed
//! [`INIT_STARTED`] within [`STALL_AFTER`], the daemon kills that VMM and launches
//! it once more (logged as a warning with the stalled console's last lines). A
//! second stall is reported as the failure it is.

use banger_contract::console::INIT_STARTED;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a boot may go without banger's init printing its first line: ten times
/// what it takes on a loaded machine here (init starts 3–6 s into the boot).
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// Watches one boot's console for [`INIT_STARTED`].
#[derive(Debug)]
pub struct StallWatch {
    /// When to look; `None` once init was seen (or when not watching).
    check_at: Option<Instant>,
}

impl StallWatch {
    /// Watch a boot that started now, with an overall `timeout`: the check comes at
    /// [`STALL_AFTER`], or at half the timeout when that is shorter (a short timeout
    /// still leaves the second boot time to finish). `watch` false: never stalls
    /// (no banger initrd to print the line).
    pub fn new(watch: bool, timeout: Duration) -> Self {
        Self {
            check_at: watch.then(|| Instant::now() + STALL_AFTER.min(timeout / 2)),
        }
    }

    /// Whether the boot has stalled: the check time passed and `console` lacks the
    /// init's first line. Reads the console (a bounded tail) at most until it sees it.
    pub fn stalled(&mut self, console: &Path) -> bool {
        match self.check_at {
            Some(t) if Instant::now() >= t => {
                let seen = console_has_init(console);
                self.check_at = None;
                !seen
            }
            _ => false,
        }
    }
}

/// Whether the console shows banger's init started (its first 64 KiB: the line
/// comes right after the kernel's few quiet lines).
fn console_has_init(console: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(console).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    let needle = INIT_STARTED.as_bytes();
    head.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_without_the_init_line_is_a_stall_and_is_judged_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        std::fs::write(&log, "[    0.5] some kernel line\n").unwrap();
        let mut w = StallWatch::new(true, Duration::ZERO);
        assert!(w.stalled(&log));
        assert!(!w.stalled(&log), "judged once");
        std::fs::write(&log, format!("[ 0.5] x\n[ 3.1] {INIT_STARTED}\n")).unwrap();
        let mut w = StallWatch::new(true, Duration::ZERO);
        assert!(!w.stalled(&log));
        let mut off = StallWatch::new(false, Duration::ZERO);
        std::fs::write(&log, "").unwrap();
        assert!(!off.stalled(&log));
        let mut early = StallWatch::new(true, Duration::from_secs(600));
        assert!(!early.stalled(&log), "not before its time");
    }
}
