//! Terminal output: progress on stderr (a spinner on a terminal, one line per stage
//! otherwise, JSON lines or nothing when asked: see `output`), tables, sizes and ages.

use crate::output::{self, ProgressMode};
use banger_rpc::{Progress, StageTiming};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// What a daemon stage means to a user (`agent` → "booting guest"). Unknown stages
/// (a newer daemon) show as they are.
pub fn stage_label(stage: &str) -> &str {
    match stage {
        "reserve" => "reserving name and address",
        "disks" => "preparing disks",
        "network" => "setting up the network",
        "accel-probe" => "checking hardware acceleration",
        "boot" => "starting the VM",
        "agent" => "booting guest",
        "ssh" => "waiting for ssh",
        "sync" => "asking the guest to power off",
        "poweroff" => "waiting for the guest to power off",
        "force-off" => "forcing the VM off",
        "cleanup" => "cleaning up",
        "export" => "reading the VM's disks",
        "kernel" => "fetching the kernel",
        "kernel:initrd" => "building the initrd",
        "image:pull" => "downloading image layers",
        "image:apply" => "unpacking image layers",
        "image:copy" => "copying the root filesystem",
        "image:bootstrap" | "image:debootstrap" => "installing the base system",
        "image:customize" => "customising the image",
        "image:unpack" => "unpacking the root filesystem",
        "image:work-seed" => "preparing /root",
        "image:initrd" => "building the initrd",
        "image:publish" => "publishing the image",
        "workspace" => "shipping the repository",
        "run" => "running the command",
        "delete" => "deleting the VM",
        other => other,
    }
}

/// Live progress of one long call, on stderr.
pub struct Spinner {
    what: String,
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    notices: Vec<String>,
    last: Option<String>,
}

impl Spinner {
    /// Progress for the call described by `what` (`creating VM dev`).
    pub fn new(what: &str) -> Self {
        Self::with_mode(what, output::progress())
    }

    /// Like [`Spinner::new`], but a line per stage instead of a spinner on a
    /// terminal: for calls running side by side (parallel attempts), whose spinners
    /// would fight over one line.
    pub fn lines(what: &str) -> Self {
        let mode = match output::progress() {
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Self::with_mode(what, mode)
    }

    fn with_mode(what: &str, mode: ProgressMode) -> Self {
        let bar = (mode == ProgressMode::Auto).then(|| {
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
            what: what.to_string(),
            mode,
            bar,
            notices: vec![],
            last: None,
        }
    }

    /// Show a progress line; some stages carry a notice the user must see once.
    /// The accelerator notice (VMs run under TCG) is shown once per host boot, and
    /// on every call with `--verbose` (`banger doctor` always reports it).
    pub fn update(&mut self, p: &Progress) {
        if p.stage == "accel" && !notices::accel_due() {
            return;
        }
        if p.stage == "accel" || p.stage == "image" || p.stage == "warning" {
            if let Some(d) = &p.detail {
                if !self.notices.contains(d) {
                    self.notices.push(d.clone());
                    if p.stage == "warning" {
                        self.say("warning", d);
                    } else {
                        self.note(d);
                    }
                }
            }
            return;
        }
        let label = stage_label(&p.stage);
        let msg = match &p.detail {
            Some(d) => format!("{label}: {}", printable(d)),
            None => label.to_string(),
        };
        match self.mode {
            ProgressMode::Auto => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("{}: {msg}", self.what));
                }
            }
            ProgressMode::Plain => {
                // One line per stage: details within a stage (layer 3 of 9) would
                // flood a log, so only a new stage prints.
                if self.last.as_deref() != Some(p.stage.as_str()) {
                    anstream::eprintln!("{}: {msg}", self.what);
                }
            }
            ProgressMode::Json => {
                let v = serde_json::json!({"progress": {
                    "what": self.what,
                    "stage": p.stage,
                    "label": label,
                    "detail": p.detail,
                    "elapsed_ms": p.elapsed_ms,
                }});
                eprintln!("{v}");
            }
            ProgressMode::None => {}
        }
        self.last = Some(p.stage.clone());
    }

    /// A note the user must see (not progress): printed above the spinner, or as
    /// a line on stderr in text mode.
    pub fn note(&self, line: &str) {
        self.say("note", line);
    }

    fn say(&self, kind: &str, line: &str) {
        match &self.bar {
            Some(b) => b.println(format!("{kind}: {line}")),
            None if !output::json() => anstream::eprintln!("{kind}: {line}"),
            None => {}
        }
    }

    /// Remove the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
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
        anstream::eprintln!("  {:<12} {:>7} ms", t.stage, t.ms);
    }
    anstream::eprintln!("  {:<12} {:>7} ms", "total", total);
}

/// A plain table: left-aligned columns three spaces apart, no borders, no leading or
/// trailing blanks, so `awk '{print $1}'` and `cut` work on it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Append a row.
    pub fn add_row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for (n, r) in self.rows.iter().enumerate() {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] - c.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A table with `header` as its first row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::default();
    t.add_row(header.iter().map(|h| h.to_string()).collect());
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

/// Print a table on stdout.
pub fn print_table(t: &Table) {
    println!("{t}");
}

/// How long ago Unix time `at` was, the way `docker ps` says it ("5 minutes ago").
pub fn ago(at: i64) -> String {
    format!("{} ago", duration_words(now().saturating_sub(at)))
}

/// A span of seconds in words: "40 seconds", "5 minutes", "3 hours", "2 days".
pub fn duration_words(secs: i64) -> String {
    let s = secs.max(0);
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        _ => (s / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Unix time `at` as a UTC timestamp (`2026-12-02 20:17:47 UTC`).
pub fn timestamp(at: i64) -> String {
    let days = at.div_euclid(86400);
    let rem = at.rem_euclid(86400);
    let (y, m, d) = banger_buildinfo::civil::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

    #[test]
    fn tables_have_no_padding_at_the_edges() {
        let mut t = table(&["NAME", "STATE", "IP"]);
        t.add_row(vec!["dev".into(), "running".into(), "172.30.0.2".into()]);
        t.add_row(vec!["a-long-name".into(), "stopped".into(), "-".into()]);
        let s = t.to_string();
        for line in s.lines() {
            assert_eq!(line, line.trim(), "{line:?}");
        }
        assert_eq!(
            s,
            "NAME          STATE     IP\n\
             dev           running   172.30.0.2\n\
             a-long-name   stopped   -"
        );
    }

    #[test]
    fn ages_and_timestamps() {
        assert_eq!(duration_words(1), "1 second");
        assert_eq!(duration_words(125), "2 minutes");
        assert_eq!(duration_words(7200), "2 hours");
        assert_eq!(duration_words(3 * 86400), "3 days");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(1_796_242_667), "2026-12-02 20:17:47 UTC");
    }

    #[test]
    fn stages_have_words() {
        assert_eq!(stage_label("agent"), "booting guest");
        assert_eq!(stage_label("something-new"), "something-new");
    }
}
