//! `bangerd`, the owner daemon (a thin binary over the `banger_daemon` library).
//! The CLI starts it on demand; it listens on a 0600 unix socket.

use anyhow::Context;
use banger_model::Layout;
use banger_store::{MigrationStatus, Store};
use clap::Parser;

/// banger's daemon (started automatically by `banger`).
#[derive(Debug, Parser)]
#[command(name = "bangerd", version = banger_buildinfo::VERSION_LINE, about)]
struct Args {
    /// Check the state database's schema against this binary and exit: status 1 if the
    /// database was written by a newer banger.
    #[arg(long)]
    check_migrations: bool,
    /// Detach from the terminal's session (used when the CLI starts the daemon).
    #[arg(long)]
    detach: bool,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain: the CLI shows it to the user.
            eprintln!("bangerd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Everything the daemon and its children (VMMs, image tools) create is the
    // owner's alone: disks, console logs, sockets, image directories.
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0o077) };
    let layout = Layout::from_env();
    if args.check_migrations {
        return check_migrations(&layout);
    }
    if args.detach {
        // SAFETY: setsid has no memory-safety preconditions; failure (already a
        // session leader) is harmless.
        unsafe { libc::setsid() };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let app = banger_daemon::open(layout)?;
        banger_daemon::serve(app, shutdown_signal()).await
    })?;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
    }
    tracing::info!("shutting down (running VMs keep running)");
}

fn check_migrations(layout: &Layout) -> anyhow::Result<()> {
    let status = Store::check_migrations(&layout.db())
        .with_context(|| format!("checking {}", layout.db().display()))?;
    match status {
        MigrationStatus::TooNew { db, binary } => {
            eprintln!(
                "{}: schema {db} is newer than this bangerd knows ({binary}); upgrade banger",
                layout.db().display()
            );
            std::process::exit(1);
        }
        other => println!("{}: {other:?}", layout.db().display()),
    }
    Ok(())
}
