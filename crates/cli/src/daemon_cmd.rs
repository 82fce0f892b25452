//! `banger daemon status | start | stop | restart | logs`: the user-mode daemon the CLI
//! starts on demand (a system install runs it under systemd: `banger system …`).

use crate::errors::{fail, Class};
use crate::{daemon, output};
use banger_model::Layout;
use clap::Subcommand;
use serde::Serialize;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Show whether bangerd runs, its pid, version, socket and log (does not start it).
    ///
    /// Exit status: 0 when it runs, 1 when it does not.
    #[command(verbatim_doc_comment)]
    Status,
    /// Start bangerd in the background if it is not running (commands start it when
    /// they need it; this is for doing it ahead of time).
    Start,
    /// Stop bangerd. Running VMs keep running and are re-adopted on the next start.
    Stop,
    /// Stop bangerd, then start it again (running VMs keep running).
    Restart,
    /// Print the daemon's log.
    ///
    /// Examples:
    ///   banger daemon logs -n 50
    ///   banger daemon logs -f
    #[command(verbatim_doc_comment)]
    Logs {
        /// Keep printing new lines until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Print only the last N lines [default: 100].
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 100)]
        lines: usize,
    },
}

/// What `daemon status` (and start, stop, restart) report.
#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    /// Whether bangerd answers.
    pub running: bool,
    /// Its pid, while it runs.
    pub pid: Option<u32>,
    /// Its version, while it runs.
    pub version: Option<String>,
    /// The socket it answers on.
    pub socket: String,
    /// Its log file (user mode).
    pub log: String,
}

async fn status_now(layout: &Layout) -> DaemonStatus {
    let ping = daemon::ping_running(layout).await;
    DaemonStatus {
        running: ping.is_some(),
        pid: ping.as_ref().map(|p| p.pid),
        version: ping.map(|p| p.version),
        socket: layout.socket().display().to_string(),
        log: crate::errors::daemon_log_phrase(),
    }
}

/// The first line keeps the shape scripts (and banger's own tests) parse:
/// `bangerd VERSION running, pid N, socket PATH`.
fn print_status(s: &DaemonStatus) {
    match (s.running, s.pid, &s.version) {
        (true, Some(pid), Some(v)) => {
            println!("bangerd {v} running, pid {pid}, socket {}", s.socket);
        }
        _ => println!("bangerd is not running (socket {})", s.socket),
    }
    println!("log: {}", s.log);
}

/// Run one `banger daemon` command.
pub async fn run(layout: &Layout, cmd: DaemonCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DaemonCmd::Status => {
            let s = status_now(layout).await;
            output::render(&s, print_status)?;
            // 1, as `--help`, README and docs/json.md say: "not running" is this
            // command's answer, not a failure to reach the daemon.
            Ok(if s.running {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DaemonCmd::Start => {
            daemon::connect(layout).await?;
            output::render(&status_now(layout).await, print_status)
        }
        DaemonCmd::Stop => {
            stop(layout).await?;
            output::render(&status_now(layout).await, |_| {})
        }
        DaemonCmd::Restart => {
            stop(layout).await?;
            daemon::connect(layout).await?;
            output::render(&status_now(layout).await, print_status)
        }
        DaemonCmd::Logs { follow, lines } => logs(layout, follow, lines).await,
    }
}

async fn stop(layout: &Layout) -> anyhow::Result<()> {
    if let Some(ping) = daemon::ping_running(layout).await {
        daemon::stop(layout, ping.pid).await?;
        output::say(format!("bangerd stopped (pid {})", ping.pid));
    } else {
        output::say("bangerd was not running");
    }
    Ok(())
}

/// The last `n` lines of `bytes`.
fn tail(bytes: &[u8], n: usize) -> &[u8] {
    let mut count = 0;
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// How much of the log end `daemon logs` reads to find the last lines.
const LOG_TAIL_BYTES: u64 = 4 << 20;

async fn logs(layout: &Layout, follow: bool, lines: usize) -> anyhow::Result<ExitCode> {
    let path = layout.daemon_log();
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                Class::NotFound,
                format!(
                    "there is no daemon log at {} (bangerd was never started in user mode here; \
                     a system install logs to the journal: journalctl -u bangerd)",
                    path.display()
                ),
            ))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("opening {}", path.display()))),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![];
    (&mut f).take(LOG_TAIL_BYTES).read_to_end(&mut buf)?;
    let mut offset = from + buf.len() as u64;
    let shown = tail(&buf, lines);
    emit(shown)?;
    if shown.is_empty() && !follow {
        output::hint(format!("the daemon log {} is empty", path.display()));
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated or truncated: start over
        }
        if len > offset {
            f.seek(SeekFrom::Start(offset))?;
            let mut more = vec![];
            (&mut f).take(LOG_TAIL_BYTES).read_to_end(&mut more)?;
            offset += more.len() as u64;
            emit(&more)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Log bytes to stdout: as they are (escapes removed when stdout is not a terminal),
/// or as JSON lines `{"line": ...}`.
fn emit(bytes: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = std::io::stdout().lock();
    if output::json() {
        for l in text.lines() {
            writeln!(
                out,
                "{}",
                serde_json::json!({ "line": crate::vm::strip_escapes(l) })
            )?;
        }
    } else if std::io::stdout().is_terminal() {
        out.write_all(text.as_bytes())?;
    } else {
        out.write_all(crate::vm::strip_escapes(&text).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"", 3), b"");
    }
}
