//! `banger vm wait NAME --for running|stopped|port:N|file:PATH [--timeout D]`: block
//! until a VM reaches a condition, so scripts stop polling.
//!
//! `running` and `stopped` follow the daemon's event stream (subscribed before the
//! VM's current state is read, so no change can slip between the two). `port:N` and
//! `file:PATH` first wait for `running`, then ask the guest agent twice a second
//! (listening ports; `test -e PATH`): the guest has no event for either.

use crate::errors::{fail, Class};
use crate::events::Watch;
use crate::exec::{self, Input, Request};
use crate::output;
use banger_model::VmState;
use banger_rpc::{Client, VmNameParams, VmPorts, VmShow};
use serde::Serialize;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How often `port:` and `file:` ask the guest.
const POLL: Duration = Duration::from_millis(500);

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The VM is running (its guest agent answered).
    Running,
    /// The VM is stopped (or was never started).
    Stopped,
    /// A TCP port listens in the guest.
    Port(u16),
    /// A path exists in the guest.
    File(String),
}

impl FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => return Ok(Condition::Running),
            "stopped" => return Ok(Condition::Stopped),
            _ => {}
        }
        if let Some(p) = s.strip_prefix("port:") {
            return match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(Condition::Port(n)),
                _ => Err(format!(
                    "{p:?} is not a TCP port (1 to 65535), e.g. port:8000"
                )),
            };
        }
        if let Some(f) = s.strip_prefix("file:") {
            if f.is_empty() || f.contains('\0') {
                return Err("file: needs a guest path, e.g. file:/root/ready".into());
            }
            return Ok(Condition::File(f.to_string()));
        }
        Err(format!(
            "{s:?} is not a condition; use running, stopped, port:N or file:PATH"
        ))
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Running => f.write_str("running"),
            Condition::Stopped => f.write_str("stopped"),
            Condition::Port(p) => write!(f, "port:{p}"),
            Condition::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// `30s`, `5m`, `1h`, `500ms`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30s, 5m or 1h"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    Ok(d)
}

/// What `vm wait --json` prints.
#[derive(Debug, Serialize)]
struct Waited {
    vm: String,
    condition: String,
    state: String,
    waited_ms: u64,
}

/// `banger vm wait`.
pub async fn wait(
    c: &mut Client,
    name: String,
    cond: Condition,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + timeout;
    let work = async {
        let want = if cond == Condition::Stopped {
            VmState::Stopped
        } else {
            VmState::Running
        };
        let state = until_state(c, &name, want).await?;
        match &cond {
            Condition::Port(p) => until_port(c, &name, *p).await?,
            Condition::File(f) => until_file(&name, f).await?,
            _ => {}
        }
        anyhow::Ok(state)
    };
    let state = tokio::select! {
        r = work => r?,
        () = tokio::time::sleep_until(deadline.into()) => {
            return Err(fail(Class::Timeout, format!(
                "VM {name} did not reach {cond} within {}; wait longer with --timeout",
                humantime(timeout)
            )));
        }
    };
    let w = Waited {
        vm: name,
        condition: cond.to_string(),
        state: state.as_str().to_string(),
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    output::render(&w, |w| {
        println!("{} is {} ({})", w.vm, w.condition, w.state);
    })
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Wait until `name` is in `want`; a VM in the error state or deleted meanwhile is
/// a failure (it will not get there by itself).
async fn until_state(c: &mut Client, name: &str, want: VmState) -> anyhow::Result<VmState> {
    let mut watch = Watch::open().await?;
    let p = VmNameParams {
        name: name.to_string(),
    };
    let now = c.call::<VmShow>(&p, |_| {}).await?;
    let mut state = now.state.as_str().to_string();
    let mut error = now.error;
    loop {
        if state == want.as_str() {
            return Ok(want);
        }
        match state.as_str() {
            "error" => {
                return Err(fail(
                    Class::Failed,
                    format!(
                        "VM {name} failed ({}); see banger vm show {name}",
                        error.as_deref().unwrap_or("no reason recorded")
                    ),
                ))
            }
            "deleted" => {
                return Err(fail(
                    Class::NotFound,
                    format!("VM {name} was deleted while waiting for it"),
                ))
            }
            "lagged" => {
                // Missed events: read the state again.
                let v = c.call::<VmShow>(&p, |_| {}).await?;
                state = v.state.as_str().to_string();
                error = v.error;
                continue;
            }
            _ => {}
        }
        loop {
            let Some(ev) = watch.next().await? else {
                return Err(fail(
                    Class::DaemonUnavailable,
                    "the daemon stopped while waiting; run banger vm wait again",
                ));
            };
            if ev.vm == name || ev.state == "lagged" {
                state = ev.state;
                error = ev.error;
                break;
            }
        }
    }
}

async fn until_port(c: &mut Client, name: &str, port: u16) -> anyhow::Result<()> {
    let p = VmNameParams {
        name: name.to_string(),
    };
    loop {
        // The agent may be restarting its listing; only a VM that stopped is final.
        match c.call::<VmPorts>(&p, |_| {}).await {
            Ok(r) if r.ports.contains(&port) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                let e = anyhow::Error::new(e);
                if crate::errors::classify(&e) != Class::Failed {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn until_file(name: &str, path: &str) -> anyhow::Result<()> {
    loop {
        let req = Request::from_argv(&["test".into(), "-e".into(), path.to_string()]);
        let code = exec::run(name, req, Input::Null, &mut tokio::io::sink()).await?;
        if code == 0 {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_matches_its_schema() {
        let w = Waited {
            vm: "dev".into(),
            condition: Condition::Port(80).to_string(),
            state: "running".into(),
            waited_ms: 5,
        };
        crate::schema::assert_shape("wait", &serde_json::to_value(&w).unwrap());
    }

    #[test]
    fn conditions_and_durations_parse() {
        assert_eq!("running".parse(), Ok(Condition::Running));
        assert_eq!("port:8000".parse(), Ok(Condition::Port(8000)));
        assert_eq!(
            "file:/root/ready".parse(),
            Ok(Condition::File("/root/ready".into()))
        );
        assert!("port:0".parse::<Condition>().is_err());
        assert!("port:x".parse::<Condition>().is_err());
        assert!("file:".parse::<Condition>().is_err());
        assert!("up".parse::<Condition>().is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
