//! `banger doctor`: is this host ready to run banger, and if not, what to do about it.
//!
//! Deliberately independent of the daemon: the checks are what someone runs when
//! `bangerd` will not start or a VM will not boot, so they only look at this host
//! (tools, device nodes, privileges, the guest agent binary, Firecracker) and at files
//! in banger's state layout (the cached KVM/TCG verdict). They are nevertheless the
//! daemon's own checks: tool lookup, the package table, the agent check, the verdict
//! file and the Firecracker policy all come from `banger-hostcheck`, which the daemon
//! uses too. Each check prints one line; a problem carries the command that fixes it,
//! phrased for this distribution.

mod accel;
mod agent;
mod dns;
mod firecracker;
mod hints;
mod host;
mod system;

use anstyle::{AnsiColor, Style};
use banger_model::Layout;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Not a problem, worth knowing (e.g. which backend `auto` picks).
    Info,
    /// banger works, but something is degraded or will fail later.
    Warn,
    /// banger will not work until this is fixed.
    Fail,
}

/// One line of the report (also the `--json` element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command or step that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check, in display order.
pub async fn checks(layout: &Layout) -> Vec<Check> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let distro = hints::host_distro();
    let mut out = host::tool_checks(distro, root);
    out.push(host::kvm_check(root));
    let mode = host::mode(root);
    out.push(host::mode_check(mode));
    out.push(host::tun_check(root, mode));
    let (accel, accel_kind) = accel::host_check(layout);
    out.push(accel);
    out.push(agent::check());
    let (fc, probe) = firecracker::check();
    out.push(fc);
    out.push(firecracker::auto_backend_check(&probe, accel_kind));
    out.push(dns::check());
    out.extend(system::checks(env!("CARGO_PKG_VERSION")).await);
    out
}

/// The human report: one line per check, its fix indented below it, then a summary.
/// `w` decides about colour (an `anstream` stream strips it when not a terminal or
/// when NO_COLOR is set).
fn render(w: &mut dyn Write, checks: &[Check]) -> std::io::Result<()> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let dim = Style::new().dimmed();
    for c in checks {
        let (label, style) = match c.status {
            Status::Ok => ("ok", Style::new().fg_color(Some(AnsiColor::Green.into()))),
            Status::Info => ("info", Style::new().fg_color(Some(AnsiColor::Cyan.into()))),
            Status::Warn => (
                "warn",
                Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            ),
            Status::Fail => (
                "FAIL",
                Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            ),
        };
        writeln!(
            w,
            "{style}{label:<4}{style:#}  {:<width$}  {}",
            c.name, c.detail
        )?;
        if let Some(fix) = &c.fix {
            writeln!(w, "      {:<width$}  {dim}fix: {fix}{dim:#}", "")?;
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    match (fails, warns) {
        (0, 0) => writeln!(w, "\nall checks passed"),
        (0, n) => writeln!(w, "\nno failures, {n} warning(s)"),
        (f, n) => writeln!(
            w,
            "\n{f} failure(s), {n} warning(s): banger will not work until the failures are fixed"
        ),
    }
}

/// `banger doctor [--json]`: exit status 1 if any check failed.
pub async fn run(layout: &Layout, json: bool) -> anyhow::Result<ExitCode> {
    let checks = checks(layout).await;
    let mut out = anstream::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&checks)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        render(&mut out, &checks)
    }
    .and_then(|()| out.flush());
    match written {
        // `banger doctor | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(anyhow::Error::new(e).context("writing the doctor report to stdout")),
        Ok(()) => {}
    }
    Ok(if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_puts_the_fix_under_its_check() {
        let checks = [
            Check::new("git", Status::Fail, "missing").fix("apt-get install git"),
            Check::new("/dev/kvm", Status::Ok, "present"),
        ];
        let mut out = Vec::new();
        render(&mut anstream::StripStream::new(&mut out), &checks).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "FAIL  git       missing");
        assert_eq!(lines[1], "                fix: apt-get install git");
        assert_eq!(lines[2], "ok    /dev/kvm  present");
        assert_eq!(
            lines.last().copied(),
            Some("1 failure(s), 0 warning(s): banger will not work until the failures are fixed")
        );
    }

    #[test]
    fn json_shape() {
        let c = Check::new("git", Status::Fail, "missing").fix("apt-get install git");
        let v = serde_json::to_value([c]).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!([{"name": "git", "status": "fail", "detail": "missing", "fix": "apt-get install git"}])
        );
    }
}
