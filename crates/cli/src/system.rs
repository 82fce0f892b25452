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

/// Before the services go: ask the running daemon to remove banger's bridge, nftables
/// tables and resolver settings (`banger network down`). Best effort, said aloud.
async fn network_down_first() {
    let layout = banger_model::Layout::from_env();
    let down = async {
        let mut c = crate::daemon::connect(&layout).await?;
        Ok::<_, anyhow::Error>(
            c.call::<banger_rpc::NetworkDown>(&banger_rpc::NoParams {}, |_| {})
                .await?,
        )
    };
    if crate::daemon::ping_running(&layout).await.is_none() {
        println!("bangerd is not running here: banger's bridge and nftables tables, if any, stay (`banger network down` removes them while it runs)");
        return;
    }
    match down.await {
        Ok(r) => r.removed.iter().for_each(|l| println!("removed {l}")),
        Err(e) => println!("banger's host networking stays: {e:#}"),
    }
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
            for f in &out.files {
                println!("installed {}", f.display());
            }
            if out.units {
                println!(
                    "bangerd-root.service and bangerd.service are running; bangerd answers on {} for {}",
                    l.daemon_socket().display(),
                    owner.name
                );
            } else {
                println!(
                    "systemd is not PID 1 here (a container, WSL or another init system), so no units were installed.\n\
                     Run both services under your supervisor, as root:\n    banger system run --owner {}",
                    owner.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SystemCmd::Status => status(&l, version).await,
        SystemCmd::Restart => {
            root_or("banger system restart")?;
            let ping = install::restart(&l).await?;
            println!(
                "restarted; bangerd {} answers (pid {})",
                ping.version, ping.pid
            );
            Ok(ExitCode::SUCCESS)
        }
        SystemCmd::Uninstall { purge } => {
            root_or("banger system uninstall")?;
            network_down_first().await;
            for p in install::uninstall(&l, purge)? {
                println!("removed {}", p.display());
            }
            if !purge {
                println!(
                    "kept {} and {} (images, VM disks); `banger system uninstall --purge` deletes them",
                    l.state_dir().display(),
                    l.cache_dir().display()
                );
            }
            Ok(ExitCode::SUCCESS)
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
    let mut failed = false;
    for r in &rows {
        let mark = match r.status {
            Status::Pass => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                failed = true;
                "FAIL"
            }
        };
        println!("{mark} {:<22} {}", r.name, r.detail);
        if let Some(fix) = &r.fix {
            println!("     {:<22} fix: {fix}", "");
        }
    }
    if let Ok(Some(rec)) = InstallRecord::read(&l.install_record()) {
        println!("owner {}, built {}", rec.owner, rec.built_at);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
