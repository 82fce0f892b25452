//! `banger update`: install the newest signed release in place, with a way back.
//!
//! The checks, the swap and the rollback are `banger-update`'s; this file decides what
//! kind of install this is and supplies the steps that depend on it ([`Hooks`]):
//! - **directory install** (no `/etc/banger/install.toml`): the binaries live side by
//!   side wherever this `banger` is, and the CLI starts the daemon. A restart is
//!   `banger daemon stop` (guests keep running: the daemon never kills them on stop)
//!   followed by the new CLI starting the new daemon.
//! - **system install** (`banger system install`, issue 11): `/usr/local/...`, restarted
//!   through systemd, install record rewritten with the new binaries' identity.
//!
//! Health after a restart: the new CLI reports the release's identity, the process
//! answering on the daemon socket runs the newly installed `bangerd` file, and
//! `banger doctor` shows no check failing that passed before the update.

use crate::daemon;
use banger_buildinfo::BuildInfo;
use banger_model::Layout;
use banger_rpc::{Client, NoParams, OperationInfo, OperationsList, Ping, PingResult};
use banger_update::{HookError, Hooks, Install, Options, Outcome, Trust};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The system daemon's socket (system install layout).
const SYSTEM_SOCKET: &str = "/run/banger/bangerd.sock";
/// The units `banger system install` writes.
const UNITS: [&str; 2] = ["bangerd-root.service", "bangerd.service"];
/// How long a command of the new (or old) install may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// Update banger to the newest release: download, verify its signature, swap the
/// binaries, restart the daemon (running VMs keep running), check, roll back on failure.
///
/// Example: banger update --check
///
/// Example: sudo banger update            (a system install)
///
/// Example: banger update --to v0.1.2     (a specific version; the only way to downgrade)
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Only say whether a newer release exists.
    #[arg(long)]
    check: bool,
    /// Install exactly this version (vX.Y.Z); needed to go back to an older one.
    #[arg(long, value_name = "vX.Y.Z", value_parser = parse_version)]
    to: Option<banger_update::semver::Version>,
    /// Download, verify, stage and check the release, print what would change, change nothing.
    #[arg(long, conflicts_with = "check")]
    dry_run: bool,
    /// Update even while operations (VM creates, image builds) are in flight.
    #[arg(long)]
    force: bool,
}

fn parse_version(s: &str) -> Result<banger_update::semver::Version, String> {
    banger_update::manifest::parse_version(s).map_err(|e| e.to_string())
}

pub async fn run(layout: &Layout, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let trust = Trust::builtin()?;
    let current = BuildInfo::current();
    let install = detect()?;
    let system = matches!(install, Install::System { .. });
    // SAFETY: geteuid has no preconditions.
    if system && !a.check && unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "banger is installed system-wide (/etc/banger/install.toml): run `sudo banger update`"
        );
    }
    let test = if banger_update::trust::TEST_BUILD {
        " [TEST BUILD]"
    } else {
        ""
    };
    // Progress-like context on stderr: silent in JSON mode unless --progress asks.
    let chatty = crate::output::progress() != crate::output::ProgressMode::None;
    if chatty {
        anstream::eprintln!(
            "banger {} (commit {}) in {}{test}",
            current.version,
            current.commit,
            install.bin_dir().display()
        );
    }
    let opts = Options {
        to: a.to,
        check_only: a.check,
        dry_run: a.dry_run,
        force: a.force,
    };
    let mut hooks = Runner {
        layout: layout.clone(),
        install: install.clone(),
        system,
        old_daemon: None,
        doctor_before: None,
    };
    let outcome = banger_update::run(&trust, &install, &current, &opts, &mut hooks).await?;
    crate::output::render(&UpdateReport::new(&current, outcome), report)
}

/// A system install when its record exists; then this must be the installed banger.
/// Otherwise the directory this binary lives in.
fn detect() -> anyhow::Result<Install> {
    use anyhow::Context;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this banger's own executable")?;
    let system = Install::system();
    if let Some(record) = system.record().filter(|r| r.exists()) {
        let installed = system.binary("banger");
        let same = installed.canonicalize().map(|p| p == exe).unwrap_or(false);
        if !same {
            anyhow::bail!(
                "banger is installed system-wide ({}), but this is {}; run {} update",
                record.display(),
                exe.display(),
                installed.display()
            );
        }
        return Ok(system);
    }
    let dir = exe
        .parent()
        .context("this banger's executable has no directory")?;
    Ok(Install::Dir(dir.to_path_buf()))
}

/// A release as `update --json` names it.
#[derive(Debug, Serialize)]
struct ReleaseId {
    version: String,
    commit: String,
}

/// What `banger update --json` prints (docs/schemas.json `update`): one object
/// whatever the outcome, so a script reads `outcome` and then the fields it names.
#[derive(Debug, Serialize)]
struct UpdateReport {
    /// `available` (`--check` found a newer release), `up_to_date`,
    /// `already_installed` (`--to` names what runs), `dry_run` or `updated`.
    outcome: &'static str,
    /// The banger that ran this command.
    current: ReleaseId,
    /// The newest release published for this machine, when the outcome says.
    latest: Option<String>,
    /// The release that is available, would be installed (`dry_run`) or was.
    to: Option<ReleaseId>,
    /// `dry_run`: where each file would go.
    files: Vec<PathBuf>,
    /// `dry_run`: operations in flight a real update would wait for.
    in_flight: Vec<String>,
    /// `updated`: the previous files, kept beside the new ones.
    backups: Vec<PathBuf>,
}

impl UpdateReport {
    fn new(current: &BuildInfo, o: Outcome) -> Self {
        let mut r = UpdateReport {
            outcome: "up_to_date",
            current: ReleaseId {
                version: current.version.clone(),
                commit: current.commit.clone(),
            },
            latest: None,
            to: None,
            files: vec![],
            in_flight: vec![],
            backups: vec![],
        };
        let id = |b: &BuildInfo| ReleaseId {
            version: b.version.clone(),
            commit: b.commit.clone(),
        };
        match o {
            Outcome::Check { latest, available } => {
                r.latest = latest.map(|l| l.to_string());
                if let Some(a) = available {
                    r.outcome = "available";
                    r.to = Some(ReleaseId {
                        version: a.version.to_string(),
                        commit: a.commit,
                    });
                }
            }
            Outcome::UpToDate { latest } => r.latest = latest.map(|l| l.to_string()),
            Outcome::AlreadyInstalled => r.outcome = "already_installed",
            Outcome::DryRun {
                to,
                plan,
                in_flight,
            } => {
                r.outcome = "dry_run";
                r.to = Some(id(&to));
                r.files = plan.into_iter().map(|p| p.dest).collect();
                r.in_flight = in_flight;
            }
            Outcome::Updated { to, backups } => {
                r.outcome = "updated";
                r.to = Some(id(&to));
                r.backups = backups;
            }
        }
        r
    }
}

fn report(r: &UpdateReport) {
    let cur = &r.current;
    match (r.outcome, &r.to) {
        ("available", Some(to)) => println!(
            "update available: {} -> {} (commit {}); run: banger update",
            cur.version, to.version, to.commit
        ),
        ("already_installed", _) => println!("banger {} is already installed", cur.version),
        ("dry_run", Some(to)) => {
            println!(
                "dry run: {} (commit {}) -> {} (commit {}) is verified and would install:",
                cur.version, cur.commit, to.version, to.commit
            );
            for f in &r.files {
                println!("  {}", f.display());
            }
            if !r.in_flight.is_empty() {
                println!(
                    "operations in flight (a real update waits for them or needs --force): {}",
                    r.in_flight.join("; ")
                );
            }
            println!("nothing was changed");
        }
        ("updated", Some(to)) => {
            println!(
                "updated: {} (commit {}) -> {} (commit {})",
                cur.version, cur.commit, to.version, to.commit
            );
            if let Some(b) = r.backups.first().and_then(|b| b.parent()) {
                println!(
                    "the previous files are kept beside the new ones as .<name>.previous (in {})",
                    b.display()
                );
            }
        }
        _ => match &r.latest {
            Some(l) => println!("banger {} is up to date (newest release: {l})", cur.version),
            None => println!(
                "banger {} is up to date (no release is published for {})",
                cur.version,
                BuildInfo::current().target
            ),
        },
    }
}

/// The install-specific steps of an update.
struct Runner {
    layout: Layout,
    install: Install,
    system: bool,
    /// The daemon that ran before the update (pid), if any.
    old_daemon: Option<u32>,
    /// `banger doctor` before the update: check name → status.
    doctor_before: Option<BTreeMap<String, String>>,
}

fn hook(e: impl std::fmt::Display) -> HookError {
    HookError(e.to_string())
}

impl Runner {
    async fn ping(&self) -> Option<PingResult> {
        if !self.system {
            return daemon::ping_running(&self.layout).await;
        }
        let mut c = Client::connect(SYSTEM_SOCKET).await.ok()?;
        c.call::<Ping>(&NoParams {}, |_| {}).await.ok()
    }

    /// Run the installed `banger` (old or new, whichever is in place) with `args`.
    async fn banger(&self, args: &[&str]) -> Result<std::process::Output, HookError> {
        let bin = self.install.binary("banger");
        let mut c = tokio::process::Command::new(&bin);
        c.args(args)
            .env_remove("BANGER_DAEMON")
            .env_remove("COMPLETE")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let line = format!("{} {}", bin.display(), args.join(" "));
        match tokio::time::timeout(CMD_TIMEOUT, c.output()).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(hook(format!("running {line}: {e}"))),
            Err(_) => Err(hook(format!(
                "{line} did not finish within {} s",
                CMD_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Start the installed daemon the way the CLI does (any command that needs it).
    async fn start_user_daemon(&self) -> Result<(), HookError> {
        let o = self.banger(&["operations", "--json"]).await?;
        if !o.status.success() {
            return Err(hook(format!(
                "the daemon did not start: {}",
                last_lines(&o.stderr)
            )));
        }
        Ok(())
    }

    async fn stop_user_daemon(&self) -> Result<(), HookError> {
        if let Some(p) = daemon::ping_running(&self.layout).await {
            daemon::stop(&self.layout, p.pid)
                .await
                .map_err(|e| hook(format!("{e:#}")))?;
        }
        Ok(())
    }

    async fn systemctl_restart(&self) -> Result<(), HookError> {
        for unit in UNITS {
            let o = tokio::process::Command::new("systemctl")
                .args(["restart", unit])
                .output()
                .await
                .map_err(|e| hook(format!("running systemctl restart {unit}: {e}")))?;
            if !o.status.success() {
                return Err(hook(format!(
                    "systemctl restart {unit} failed: {}; see journalctl -u {unit}",
                    last_lines(&o.stderr)
                )));
            }
        }
        let t = Instant::now();
        while self.ping().await.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                return Err(hook(format!(
                    "the daemon does not answer on {SYSTEM_SOCKET} 30 s after its restart; see journalctl -u bangerd.service"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// `banger doctor --json` of the installed CLI: check name → status.
    async fn doctor(&self) -> Result<BTreeMap<String, String>, HookError> {
        let o = self.banger(&["doctor", "--json"]).await?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).map_err(|e| {
            hook(format!(
                "banger doctor --json printed no report ({e}): {}",
                last_lines(&o.stderr)
            ))
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    r["name"].as_str()?.to_string(),
                    r["status"].as_str()?.to_string(),
                ))
            })
            .collect())
    }
}

impl Hooks for Runner {
    async fn operations_in_flight(&mut self) -> Result<Vec<String>, HookError> {
        if self.ping().await.is_none() {
            return Ok(Vec::new());
        }
        let sock = if self.system {
            PathBuf::from(SYSTEM_SOCKET)
        } else {
            self.layout.socket()
        };
        let mut c = Client::connect(&sock)
            .await
            .map_err(|e| hook(format!("asking the daemon what is in flight: {e}")))?;
        let ops: Vec<OperationInfo> = c
            .call::<OperationsList>(&NoParams {}, |_| {})
            .await
            .map_err(|e| hook(format!("asking the daemon what is in flight: {e}")))?;
        Ok(ops
            .iter()
            .map(|o| format!("{} {} {} ({})", o.op_id, o.method, o.target, o.stage))
            .collect())
    }

    async fn before_swap(&mut self) -> Result<(), HookError> {
        self.old_daemon = self.ping().await.map(|p| p.pid);
        match self.doctor().await {
            Ok(d) => self.doctor_before = Some(d),
            Err(e) => self.step(&format!(
                "the current banger doctor did not run ({e}); the new one's failures will not be compared"
            )),
        }
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), HookError> {
        if self.system {
            refresh_system_units(&self.install)?;
            return self.systemctl_restart().await;
        }
        self.stop_user_daemon().await?;
        self.start_user_daemon().await
    }

    async fn health(&mut self, installed: &BuildInfo) -> Result<(), HookError> {
        let o = self.banger(&["version", "--json"]).await?;
        let got: Option<BuildInfo> = serde_json::from_slice(&o.stdout).ok();
        if got.as_ref() != Some(installed) {
            return Err(hook(format!(
                "the installed banger reports {:?}, expected {} (commit {})",
                got, installed.version, installed.commit
            )));
        }
        let ping = self
            .ping()
            .await
            .ok_or_else(|| hook("the daemon does not answer after the restart"))?;
        let bangerd = self.install.binary("bangerd");
        if !same_file(&PathBuf::from(format!("/proc/{}/exe", ping.pid)), &bangerd) {
            return Err(hook(format!(
                "the daemon answering (pid {}) is not running the installed {}",
                ping.pid,
                bangerd.display()
            )));
        }
        let Some(before) = self.doctor_before.clone() else {
            return Ok(());
        };
        let after = self.doctor().await?;
        let mut regressed = Vec::new();
        for (name, status) in after.iter().filter(|(_, s)| s.as_str() == "fail") {
            match before.get(name) {
                Some(b) if b != "fail" => regressed.push(name.clone()),
                Some(_) => {}
                None => self.step(&format!(
                    "note: the new doctor check {name:?} fails ({status}); run banger doctor for the fix"
                )),
            }
        }
        if !regressed.is_empty() {
            return Err(hook(format!(
                "banger doctor now fails {} (passed before the update)",
                regressed.join(", ")
            )));
        }
        Ok(())
    }

    async fn finish(&mut self, installed: &BuildInfo) -> Result<(), HookError> {
        let Some(path) = self.install.record() else {
            return Ok(());
        };
        let mut rec = banger_update::record::InstallRecord::read(&path).map_err(hook)?;
        rec.set_build(installed);
        rec.write(&path).map_err(hook)
    }

    async fn restart_previous(&mut self) -> Result<(), HookError> {
        if self.system {
            return self.systemctl_restart().await;
        }
        self.stop_user_daemon().await?;
        if self.old_daemon.is_some() {
            self.start_user_daemon().await?;
        }
        Ok(())
    }

    fn step(&mut self, line: &str) {
        if crate::output::progress() == crate::output::ProgressMode::None {
            return;
        }
        let dim = anstyle::Style::new().dimmed();
        anstream::eprintln!("{dim}  {line}{dim:#}");
    }
}

/// ISSUE 11 HOOK — refresh the systemd units of a system install after the binaries
/// changed. A binary swap alone never updates unit files (the Go banger's v0.1.4 lesson:
/// `KillMode=process` reached existing installs only after a manual
/// `sudo banger system install`). The unit templates belong to `banger system install`
/// (issue 11); when it lands, render them here from the *new* binary (e.g. run the
/// installed `banger system install --units-only`, then `systemctl daemon-reload`).
/// Until then there is no system install to refresh, and this does nothing.
fn refresh_system_units(_install: &Install) -> Result<(), HookError> {
    Ok(())
}

/// Same inode on the same device (follows `/proc/<pid>/exe` to the running file).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn last_lines(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    // A banger child prints `error: …`; we add our own context around it.
    let v: Vec<&str> = s
        .lines()
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    v[v.len().saturating_sub(3)..]
        .join(" | ")
        .chars()
        .filter(|c| !c.is_control())
        .take(600)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_reports_match_the_shape() {
        let cur = BuildInfo::current();
        let next = BuildInfo {
            version: "9.9.9".into(),
            ..cur.clone()
        };
        let v = |s: &str| banger_update::semver::Version::parse(s).unwrap();
        let art = || banger_update::manifest::Artifact {
            url: "http://127.0.0.1/x".parse().unwrap(),
            size: 1,
        };
        let outcomes = [
            Outcome::Check {
                latest: None,
                available: None,
            },
            Outcome::Check {
                latest: Some(v("9.9.9")),
                available: Some(Box::new(banger_update::manifest::Release {
                    version: v("9.9.9"),
                    commit: "abc1234".into(),
                    built_at: "2026-01-01T00:00:00Z".into(),
                    target: cur.target.clone(),
                    tarball: art(),
                    sums: art(),
                    signature: art(),
                })),
            },
            Outcome::UpToDate {
                latest: Some(v("0.0.1")),
            },
            Outcome::AlreadyInstalled,
            Outcome::DryRun {
                to: next.clone(),
                plan: vec![banger_update::swap::Placement {
                    staged: "/s/banger".into(),
                    dest: "/usr/local/bin/banger".into(),
                }],
                in_flight: vec!["vm.create dev".into()],
            },
            Outcome::Updated {
                to: next,
                backups: vec!["/usr/local/bin/.banger.previous".into()],
            },
        ];
        let mut seen = vec![];
        for o in outcomes {
            let r = UpdateReport::new(&cur, o);
            seen.push(r.outcome);
            crate::schema::assert_shape("update", &serde_json::to_value(&r).unwrap());
        }
        assert_eq!(
            seen,
            [
                "up_to_date",
                "available",
                "up_to_date",
                "already_installed",
                "dry_run",
                "updated"
            ]
        );
    }
}
