//! `bangerd`, the owner daemon: state, orchestration and every unprivileged step.
//! The CLI starts it on demand; it listens on a 0600 unix socket.

mod app;
mod catalog;
mod coalesce;
mod config;
mod flatten;
mod handles;
mod images;
mod kernels;
mod routes;
mod vms;

use anyhow::Context;
use banger_model::Layout;
use banger_store::{MigrationStatus, Store};
use clap::Parser;
use std::sync::Arc;

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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(layout))
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

async fn run(layout: Layout) -> anyhow::Result<()> {
    let config = config::Config::from_env().context("reading configuration")?;
    for d in [&layout.state, &layout.cache, &layout.runtime] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let store = Store::open(&layout.db()).context("opening the state database")?;
    let public_key =
        banger_guest::keys::ensure(&layout.ssh_key()).context("preparing banger's ssh key")?;
    let privileged: Arc<dyn banger_helper::Privileged> = Arc::new(banger_helper::InProcess);
    let app = Arc::new(app::App::new(
        layout.clone(),
        config,
        store,
        privileged,
        public_key,
    ));

    images::sweep_staging(&app);
    kernels::sweep_staging(&app);
    flatten::sweep(&app);
    vms::reconcile(&app).await;
    tokio::spawn(vms::monitor(app.clone()));

    let listener = banger_rpc::bind(&layout.socket()).context("opening the daemon socket")?;
    let router = Arc::new(routes::router(app.clone()).context("building the method table")?);
    tracing::info!(socket = %layout.socket().display(), pid = std::process::id(), "bangerd ready");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("shutting down (running VMs keep running)");
    };
    banger_rpc::serve(listener, router, shutdown).await;
    let _ = std::fs::remove_file(layout.socket());
    Ok(())
}
