//! `banger events`: the daemon's stream of VM state changes, one line per change
//! (`--json`: one JSON object per line), until interrupted. [`Watch`] is the same
//! stream for `banger vm wait`.

use crate::{daemon, output};
use anyhow::{bail, Context};
use banger_model::Layout;
use banger_rpc::{EventsWatch, NoParams, Upgraded, VmEvent, MAX_EVENT_LINE};
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A subscription to the daemon's VM events.
pub struct Watch {
    reader: BufReader<Upgraded>,
}

impl Watch {
    /// Subscribe (on a connection of its own). Every change after this returns is seen.
    pub async fn open() -> anyhow::Result<Self> {
        let client = daemon::connect(&Layout::for_client()).await?;
        let (_, io) = client
            .call_upgrade::<EventsWatch>(&NoParams {}, |_| {})
            .await
            .context("subscribing to the daemon's events (an older bangerd? restart it with banger daemon restart)")?;
        Ok(Self {
            reader: BufReader::new(io),
        })
    }

    /// The next event; `None` when the daemon closed the stream (it stopped).
    pub async fn next(&mut self) -> anyhow::Result<Option<VmEvent>> {
        let mut line = Vec::new();
        let cap = u64::try_from(MAX_EVENT_LINE).unwrap_or(u64::MAX);
        let n = (&mut self.reader)
            .take(cap + 1)
            .read_until(b'\n', &mut line)
            .await
            .context("reading the daemon's events")?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            bail!(
                "the daemon sent an event line over {MAX_EVENT_LINE} bytes (or cut one short); \
                 is the daemon healthy? see banger daemon logs"
            );
        }
        let ev =
            serde_json::from_slice(&line).context("the daemon sent an event that is not JSON")?;
        Ok(Some(ev))
    }
}

/// `banger events`.
pub async fn run() -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut w = Watch::open().await?;
    if !output::json() && output::progress() != output::ProgressMode::None {
        anstream::eprintln!("watching VM state changes (ctrl-c to stop)");
    }
    loop {
        let ev = tokio::select! {
            ev = w.next() => ev?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(ev) = ev else {
            bail!("the daemon closed the event stream (it stopped or restarted); run banger events again");
        };
        let mut out = std::io::stdout().lock();
        let r = if output::json() {
            serde_json::to_string(&ev)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(writeln!(out, "{s}")?))
        } else {
            Ok(writeln!(out, "{}", human(&ev))?)
        };
        // A reader that went away (`| head -1`) ends the watch quietly.
        if r.is_err() || out.flush().is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// `06:50:01  dev  running` (UTC), with the error when there is one.
fn human(ev: &VmEvent) -> String {
    let secs = ev.at_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let mut line = format!(
        "{h:02}:{m:02}:{s:02}   {}   {}",
        crate::ui::printable(if ev.vm.is_empty() { "-" } else { &ev.vm }),
        ev.state
    );
    if let Some(e) = &ev.error {
        line.push_str(&format!("   {}", crate::ui::printable(e)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_event() {
        let ev = VmEvent {
            at_ms: 3_723_000 + 86_400_000,
            vm: "dev".into(),
            id: "x".into(),
            state: "error".into(),
            error: Some("boot failed".into()),
        };
        assert_eq!(human(&ev), "01:02:03   dev   error   boot failed");
    }
}
