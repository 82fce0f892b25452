//! `banger system ...`: banger as two system services (the root helper and the owner
//! daemon). Thin: the work is in `banger-system`; this module parses, generates the
//! man pages and completion scripts from the CLI's own command tree, and prints.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use banger_system::checks::{self, Status};
use banger_system::run::{RunEnd, RunOptions};
use banger_system::{install, InstallRecord, Owner, Sources, SystemError, SystemLayout};
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;

use crate::output;

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Install banger as two system services: banger-helper as root (the only
    /// privileged process) and bangerd as the user who owns the VMs.
    ///
    /// Copies the binaries to /usr/local, man pages and completions, writes
    /// /etc/banger/helper.toml and /etc/banger/install.toml, then (where systemd runs)
    /// bangerd-root.service and bangerd.service, starts them and waits until the
    /// daemon answers. Without systemd it says how to use `banger system run`.
    ///
    /// Example: sudo banger system install
    Install {
        /// The user who owns the VMs [default: SUDO_USER].
        #[arg(long)]
        owner: Option<String>,
    },
    /// What is installed, and whether the helper and the daemon answer.
    Status,
    /// Restart the helper, then the daemon (running VMs keep running).
    Restart,
    /// Remove the system install: units, binaries, man pages, completions, config.
    ///
    /// Running VMs are not stopped. --purge also deletes /var/lib/banger,
    /// /var/cache/banger and the runtime directories: every image and VM disk.
    Uninstall {
        /// Also delete every image, VM disk and cache.
        #[arg(long)]
        purge: bool,
    },
    /// Run the helper (root) and the daemon (as --owner) in the foreground, for
    /// supervisors other than systemd (containers, WSL, runit, CI).
    ///
    /// Ctrl-C or SIGTERM stops both; VMs keep running. If either exits, the other is
    /// stopped and this command fails, so the supervisor restarts both.
    ///
    /// Example: sudo banger system run --owner alice
    Run {
        /// The user the daemon runs as (and whom the helper serves).
        #[arg(long)]
        owner: String,
    },
}

/// What asking the running daemon to take banger's host networking down did.
#[derive(Debug, Default, Serialize)]
struct NetworkDownReport {
    /// What `network down` removed.
    removed: Vec<String>,
    /// Why nothing was removed, when nothing was.
    note: Option<String>,
}

/// Before the services go: ask the running daemon to remove banger's bridge, nftables
/// tables and resolver settings (`banger network down`). Best effort, said aloud.
async fn network_down_first() -> NetworkDownReport {
    let layout = banger_model::Layout::for_client();
    let down = async {
        let mut c = crate::daemon::connect(&layout).await?;
        Ok::<_, anyhow::Error>(
            c.call::<banger_rpc::NetworkDown>(&banger_rpc::NoParams {}, |_| {})
                .await?,
        )
    };
    if crate::daemon::ping_running(&layout).await.is_none() {
        return NetworkDownReport {
            removed: vec![],
            note: Some("bangerd is not running here: banger's bridge and nftables tables, if any, stay (`banger network down` removes them while it runs)".into()),
        };
    }
    match down.await {
        Ok(r) => NetworkDownReport {
            removed: r.removed,
            note: None,
        },
        Err(e) => NetworkDownReport {
            removed: vec![],
            note: Some(format!("banger's host networking stays: {e:#}")),
        },
    }
}

/// What `system install --json` prints.
#[derive(Debug, Serialize)]
struct InstallReport {
    /// Files written.
    files: Vec<PathBuf>,
    /// Whether systemd units were written and started.
    units: bool,
    /// The user who owns the VMs.
    owner: String,
    /// The daemon's socket.
    socket: PathBuf,
}

/// What `system restart --json` prints: the daemon answering after the restart.
#[derive(Debug, Serialize)]
struct RestartReport {
    /// bangerd's version.
    version: String,
    /// bangerd's pid.
    pid: u32,
}

/// What `system uninstall --json` prints.
#[derive(Debug, Serialize)]
struct UninstallReport {
    /// banger's host networking, taken down first.
    network: NetworkDownReport,
    /// Files and directories removed.
    removed: Vec<PathBuf>,
    /// Directories kept (images, VM disks) without `--purge`.
    kept: Vec<PathBuf>,
}

/// One row of `system status --json` (the `check` shape, as `banger doctor`'s).
#[derive(Debug, Serialize)]
struct StatusCheck {
    name: String,
    /// `ok`, `warn` or `fail`.
    status: &'static str,
    detail: String,
    fix: Option<String>,
}

/// What `system status --json` prints.
#[derive(Debug, Serialize)]
struct StatusReport {
    /// One row per check, as the text form shows them.
    checks: Vec<StatusCheck>,
    /// The owner the install record names, when there is one.
    owner: Option<String>,
    /// When the installed build was made, per the install record.
    built_at: Option<String>,
}

fn root_or(what: &'static str) -> Result<(), SystemError> {
    if nix_is_root() {
        Ok(())
    } else {
        Err(SystemError::NotRoot(what))
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Dispatch one `banger system` command.
pub async fn run(cmd: SystemCmd) -> anyhow::Result<ExitCode> {
    let l = SystemLayout::from_env();
    let version = env!("CARGO_PKG_VERSION");
    match cmd {
        SystemCmd::Install { owner } => {
            root_or("banger system install")?;
            let owner = Owner::from_arg_or_sudo(owner.as_deref())?;
            let src = Sources::beside_current_exe()?;
            let art =
                crate::generate::artifacts().context("generating man pages and completions")?;
            let out = install::install(&l, &owner, &src, &art, version).await?;
            let r = InstallReport {
                files: out.files,
                units: out.units,
                owner: owner.name,
                socket: l.daemon_socket(),
            };
            output::render(&r, |r| {
                for f in &r.files {
                    println!("installed {}", f.display());
                }
                if r.units {
                    println!(
                        "bangerd-root.service and bangerd.service are running; bangerd answers on {} for {}",
                        r.socket.display(),
                        r.owner
                    );
                } else {
                    println!(
                        "systemd is not PID 1 here (a container, WSL or another init system), so no units were installed.\n\
                         Run both services under your supervisor, as root:\n    banger system run --owner {}",
                        r.owner
                    );
                }
            })
        }
        SystemCmd::Status => status(&l, version).await,
        SystemCmd::Restart => {
            root_or("banger system restart")?;
            let ping = install::restart(&l).await?;
            let r = RestartReport {
                version: ping.version,
                pid: ping.pid,
            };
            output::render(&r, |r| {
                println!("restarted; bangerd {} answers (pid {})", r.version, r.pid)
            })
        }
        SystemCmd::Uninstall { purge } => {
            root_or("banger system uninstall")?;
            let network = network_down_first().await;
            let removed = install::uninstall(&l, purge)?;
            let kept = if purge {
                vec![]
            } else {
                vec![l.state_dir(), l.cache_dir()]
            };
            let r = UninstallReport {
                network,
                removed,
                kept,
            };
            output::render(&r, |r| {
                for line in &r.network.removed {
                    println!("removed {line}");
                }
                if let Some(note) = &r.network.note {
                    println!("{note}");
                }
                for p in &r.removed {
                    println!("removed {}", p.display());
                }
                if let [state, cache] = &r.kept[..] {
                    println!(
                        "kept {} and {} (images, VM disks); `banger system uninstall --purge` deletes them",
                        state.display(),
                        cache.display()
                    );
                }
            })
        }
        SystemCmd::Run { owner } => {
            root_or("banger system run")?;
            let owner = Owner::lookup(&owner)?;
            let opts = RunOptions::new(owner, l);
            match banger_system::run::run(&opts).await? {
                RunEnd::Signalled => Ok(ExitCode::SUCCESS),
                RunEnd::Exited { which, status } => {
                    anyhow::bail!("{which} exited ({status}); the other service was stopped (see its output above)")
                }
            }
        }
    }
}

async fn status(l: &SystemLayout, version: &str) -> anyhow::Result<ExitCode> {
    let mut rows = vec![checks::install_record(l, version), checks::helper_config(l)];
    if banger_system::systemd::is_pid1() {
        rows.extend(checks::units_active());
    }
    let helper_socket = banger_helper::HelperConfig::load(&l.helper_config())
        .map(|c| c.socket)
        .unwrap_or_else(|_| l.helper_socket());
    rows.push(checks::helper_reachable(&helper_socket, version).await);
    rows.push(
        match install::wait_for_daemon(&l.daemon_socket(), Duration::from_secs(1)).await {
            Ok(p) => checks::Check {
                name: "daemon".into(),
                status: Status::Pass,
                detail: format!(
                    "bangerd {} pid {} on {}",
                    p.version,
                    p.pid,
                    l.daemon_socket().display()
                ),
                fix: None,
            },
            Err(e) => checks::Check {
                name: "daemon".into(),
                status: Status::Fail,
                detail: e.to_string(),
                fix: Some("sudo banger system restart".into()),
            },
        },
    );
    let failed = rows.iter().any(|r| r.status == Status::Fail);
    let record = InstallRecord::read(&l.install_record()).ok().flatten();
    let report = StatusReport {
        checks: rows
            .into_iter()
            .map(|r| StatusCheck {
                name: r.name,
                status: match r.status {
                    Status::Pass => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                },
                detail: r.detail,
                fix: r.fix,
            })
            .collect(),
        owner: record.as_ref().map(|r| r.owner.clone()),
        built_at: record.map(|r| r.built_at),
    };
    output::render(&report, |r| {
        for c in &r.checks {
            let mark = match c.status {
                "ok" => "ok  ",
                "warn" => "warn",
                _ => "FAIL",
            };
            println!("{mark} {:<22} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("     {:<22} fix: {fix}", "");
            }
        }
        if let (Some(owner), Some(built)) = (&r.owner, &r.built_at) {
            println!("owner {owner}, built {built}");
        }
    })?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::assert_shape;

    #[test]
    fn system_reports_match_their_shapes() {
        let install = InstallReport {
            files: vec!["/usr/local/bin/banger".into()],
            units: false,
            owner: "alice".into(),
            socket: "/run/banger/bangerd.sock".into(),
        };
        assert_shape("system_install", &serde_json::to_value(&install).unwrap());
        let restart = RestartReport {
            version: "0.1.0".into(),
            pid: 42,
        };
        assert_shape("system_restart", &serde_json::to_value(&restart).unwrap());
        for note in [None, Some("bangerd is not running here".to_string())] {
            let u = UninstallReport {
                network: NetworkDownReport {
                    removed: vec!["bridge bgr0".into()],
                    note,
                },
                removed: vec!["/usr/local/bin/banger".into()],
                kept: vec!["/var/lib/banger".into()],
            };
            assert_shape("system_uninstall", &serde_json::to_value(&u).unwrap());
        }
        let status = StatusReport {
            checks: ["ok", "warn", "fail"]
                .into_iter()
                .map(|s| StatusCheck {
                    name: "helper".into(),
                    status: s,
                    detail: "answers".into(),
                    fix: (s == "fail").then(|| "sudo banger system restart".into()),
                })
                .collect(),
            owner: None,
            built_at: Some("2026-01-01T00:00:00Z".into()),
        };
        assert_shape("system_status", &serde_json::to_value(&status).unwrap());
    }
}
