//! `vm logs`: the guest console, as the kernel and init wrote it.
//!
//! The console is what the guest printed on its serial port, escape sequences
//! included (systemd colours its status lines). On a terminal they are passed
//! through; into a pipe or a file they are removed, so `vm logs dev | grep` and
//! `vm logs dev > boot.txt` get plain text.

use crate::output;
use banger_rpc::{Client, VmLogs, VmLogsParams, VmNameParams, VmShow};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// `s` without ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`,
/// two-byte `ESC x`) and without other control characters but newline and tab
/// (a carriage return before a newline is dropped too).
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte in @..~.
                    for c in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = it.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && it.peek() == Some(&'\\') {
                            it.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `n` lines of `text` (all of it when it has fewer).
fn last_lines(text: &str, n: usize) -> &str {
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &text[i + 1..],
        _ if n == 0 => "",
        _ => text,
    }
}

/// One console line as `vm logs --json` prints it (the `log_line` shape).
fn line_doc(l: &str) -> serde_json::Value {
    serde_json::json!({ "line": strip_escapes(l) })
}

fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output::json() {
        for l in text.lines() {
            writeln!(out, "{}", line_doc(l))?;
        }
    } else if std::io::stdout().is_terminal() {
        out.write_all(text.as_bytes())?;
    } else {
        out.write_all(strip_escapes(text).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// `--since WHEN`: a duration ago (`5m`, `1h 30m`) or an RFC 3339 time, as unix
/// seconds.
pub fn parse_since(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let t = match humantime::parse_duration(s) {
        Ok(d) => now.checked_sub(d).ok_or("that is before 1970")?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            format!("{s:?}: give a duration (30s, 5m, 2h, 1d) or a time (2026-12-03T06:00:00Z)")
        })?,
    };
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "that is before 1970".to_string())?
        .as_secs();
    i64::try_from(secs).map_err(|_| "that time is too far away".to_string())
}

/// `banger vm logs NAME [-f] [-n N] [--since WHEN]`: the last 64 KiB of the console
/// (or its last `lines` lines, or everything printed since `since`), then, with
/// `follow`, what comes, until Ctrl-C.
pub async fn logs(
    c: &mut Client,
    name: String,
    follow: bool,
    lines: Option<usize>,
    since: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let mut offset = None;
    let mut first = true;
    loop {
        let r = c
            .call::<VmLogs>(
                &VmLogsParams {
                    name: name.clone(),
                    offset,
                    since: if first { since } else { None },
                },
                |_| {},
            )
            .await?;
        let text = match (first, lines) {
            (true, Some(n)) => last_lines(&r.data, n),
            _ => r.data.as_str(),
        };
        emit(text)?;
        if first && r.data.is_empty() {
            // Never silent without a reason.
            let v = c
                .call::<VmShow>(&VmNameParams { name: name.clone() }, |_| {})
                .await?;
            output::hint(format!(
                "the console of {name} is empty: it is {} and has not printed anything since it \
                 last started{}",
                v.state.as_str(),
                if follow { "; waiting for output" } else { "" }
            ));
        }
        first = false;
        let more = offset.map_or(r.next_offset > 0, |o| r.next_offset > o) && since.is_some();
        offset = Some(r.next_offset);
        if more {
            // `--since` reads from an offset, one chunk per call: go on to the end.
            continue;
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_match_the_log_line_shape() {
        let v = line_doc("\x1b[1mbooting\x1b[0m");
        crate::schema::assert_shape("log_line", &v);
        assert_eq!(v["line"], "booting");
    }

    #[test]
    fn escapes_are_removed() {
        assert_eq!(
            strip_escapes("[\x1b[0;32m  OK  \x1b[0m] Started x\r\n"),
            "[  OK  ] Started x\n"
        );
        assert_eq!(strip_escapes("a\x1b]0;title\x07b\tc"), "ab\tc");
        assert_eq!(strip_escapes("a\x1b]0;t\x1b\\b"), "ab");
        assert_eq!(strip_escapes("plain"), "plain");
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let five = parse_since("5m").unwrap();
        assert!((now - 301..=now - 299).contains(&five), "{five}");
        assert_eq!(parse_since("2026-12-03T06:00:00Z").unwrap(), 1_796_277_600);
        assert!(parse_since("yesterday-ish")
            .unwrap_err()
            .contains("duration"));
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 1), "c");
        assert_eq!(last_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(last_lines("a\nb\n", 0), "");
        assert_eq!(last_lines("", 3), "");
    }
}
