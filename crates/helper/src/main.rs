//! `banger-helper`: banger's root helper. Serves the owner daemon's privileged
//! requests on a unix socket, within the limits of its root-owned config. Runs in the
//! foreground (systemd's `bangerd-root.service`, or `banger system run`), logging one
//! line per request to stderr.

use std::path::PathBuf;

use anyhow::Context;
use banger_helper::config::{HelperConfig, DEFAULT_CONFIG};
use clap::Parser;

/// banger's root helper (started by systemd or `banger system run`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The helper's config: root-owned, not writable by group or others.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Listen here instead of the config's `socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Check the config and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banger-helper: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Files the helper creates (its record, jail logs) are for root unless it says
    // otherwise.
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0o077) };
    let config = HelperConfig::load(&args.config)?;
    if args.check_config {
        println!(
            "{}: ok (owner uid {}, bridge {}, subnet {})",
            args.config.display(),
            config.owner_uid,
            config.bridge,
            config.subnet
        );
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("banger-helper must run as root (it creates bridges, taps and jails); start it with sudo, systemd or `banger system run`");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let socket = args.socket.unwrap_or_else(|| config.socket.clone());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(banger_helper::server::run(config, &socket))
}
