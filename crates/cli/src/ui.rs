//! Terminal output: progress on stderr (a spinner on a TTY, nothing otherwise, so
//! scripts see only the guest's output), error rendering, tables.

use anstyle::{AnsiColor, Style};
use banger_rpc::{ClientError, Progress, StageTiming};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Live progress of one long call.
pub struct Spinner {
    bar: Option<ProgressBar>,
    notices: Vec<String>,
}

impl Spinner {
    /// A spinner on stderr if it is a terminal.
    pub fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b.set_message(what.to_string());
            b
        });
        Self {
            bar,
            notices: vec![],
        }
    }

    /// Show a progress line; some stages carry a notice the user must see once.
    /// The accelerator notice (VMs run under TCG) is shown once per host boot, and
    /// on every call with `--verbose` (`banger doctor` always reports it).
    pub fn update(&mut self, p: &Progress) {
        if p.stage == "accel" && !notices::accel_due() {
            return;
        }
        if p.stage == "accel" || p.stage == "image" {
            if let Some(d) = &p.detail {
                if !self.notices.contains(d) {
                    self.notices.push(d.clone());
                    self.println(&format!("note: {d}"));
                }
            }
            return;
        }
        if let Some(b) = &self.bar {
            let msg = match &p.detail {
                Some(d) => format!("{}: {}", p.stage, d),
                None => p.stage.clone(),
            };
            b.set_message(msg);
        }
    }

    /// Print a line above the spinner (or plainly on stderr).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => anstream::eprintln!("{line}"),
        }
    }

    /// Remove the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Print an error the way every banger command does: the message, then the op id
/// dimmed so it can be found in the daemon log.
pub fn print_error(e: &anyhow::Error) {
    let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
    let dim = Style::new().dimmed();
    let mut msg = format!("{e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!(": {cause}"));
    }
    let msg = printable(&msg);
    anstream::eprintln!("{red}error:{red:#} {msg}");
    if let Some(ClientError::Rpc(r)) = e.downcast_ref::<ClientError>() {
        if let Some(op) = &r.op_id {
            anstream::eprintln!("{dim}(op {op}: grep the daemon log for it){dim:#}");
        }
    }
}

/// `s` with control characters (other than newline and tab) replaced: error
/// messages can quote bytes from images, archives or guests, which must not be able
/// to drive the user's terminal (escape sequences).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Stage timings as an aligned block on stderr.
pub fn print_timings(timings: &[StageTiming]) {
    let total: u64 = timings.iter().map(|t| t.ms).sum();
    for t in timings {
        anstream::eprintln!("  {:<10} {:>7} ms", t.stage, t.ms);
    }
    anstream::eprintln!("  {:<10} {:>7} ms", "total", total);
}

/// A table with banger's standard look.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Notices shown once per host boot rather than on every command.
pub mod notices {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    static VERBOSE: AtomicBool = AtomicBool::new(false);
    static MARK: OnceLock<PathBuf> = OnceLock::new();

    /// Set up from the command line: `--verbose`, and the runtime directory where
    /// the "already shown this boot" mark lives.
    pub fn init(verbose: bool, runtime_dir: &Path) {
        VERBOSE.store(verbose, Ordering::Relaxed);
        let _ = MARK.set(runtime_dir.join("accel-notice"));
    }

    /// Whether the accelerator notice should be shown now (and, if so, remember
    /// that it was for this host boot).
    pub fn accel_due() -> bool {
        if VERBOSE.load(Ordering::Relaxed) {
            return true;
        }
        match MARK.get() {
            Some(mark) => first_this_boot(mark, &banger_hostcheck::accel::boot_id()),
            None => true,
        }
    }

    /// True the first time it is called for `boot_id` with `mark`; records the boot
    /// in `mark`. When the mark cannot be written the notice is shown (better twice
    /// than never).
    pub fn first_this_boot(mark: &Path, boot_id: &str) -> bool {
        let boot_id = boot_id.trim();
        if boot_id.is_empty() {
            return true;
        }
        let seen = std::fs::read(mark)
            .map(|b| String::from_utf8_lossy(&b).trim() == boot_id)
            .unwrap_or(false);
        if !seen {
            // Never through a symlink planted at the mark's name.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(mark)
                .and_then(|mut f| f.write_all(boot_id.as_bytes()));
        }
        !seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accel_notice_is_due_once_per_host_boot() {
        let d = tempfile::tempdir().unwrap();
        let mark = d.path().join("accel-notice");
        assert!(notices::first_this_boot(&mark, "boot-1\n"));
        assert!(!notices::first_this_boot(&mark, "boot-1"));
        assert!(!notices::first_this_boot(&mark, "boot-1"));
        // A new host boot (the mark survives it when the runtime dir is not tmpfs).
        assert!(notices::first_this_boot(&mark, "boot-2"));
        assert!(!notices::first_this_boot(&mark, "boot-2"));
        // An unreadable boot id never silences the notice.
        assert!(notices::first_this_boot(&mark, ""));
        // A symlink at the mark's name is not written through.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("linked-mark");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(notices::first_this_boot(&link, "boot-3"));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(
            printable("a\x1b[31mb\x07\nc\td"),
            "a\u{fffd}[31mb\u{fffd}\nc\td"
        );
    }
}
