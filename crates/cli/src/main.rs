//! `banger`: disposable Linux development VMs.
//!
//! The CLI is thin on purpose: it parses, calls bangerd over its unix socket and
//! renders. Everything stateful happens in the daemon.

mod complete;
mod daemon;
mod doctor;
mod generate;
mod images;
mod ssh;
#[allow(dead_code)] // wired to `banger ssh-config` with the daemon's known_hosts (issue 12)
mod ssh_config;
mod system;
mod ui;
mod update;
mod version;
mod vm;
mod workspace;

use banger_model::Layout;
use banger_rpc::{Client, NoParams, OperationsList};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vm::VmCmd;

#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version = banger_buildinfo::VERSION_LINE,
    about = "Disposable Linux development VMs: boot, run, throw away."
)]
struct Cli {
    /// Show every notice on every command (e.g. that VMs run under TCG emulation,
    /// otherwise shown once per host boot).
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Build, pull, register, promote, list and delete base images.
    #[command(subcommand)]
    Image(images::ImageCmd),
    /// The kernel store: pull, import, list, show and remove kernels.
    #[command(subcommand)]
    Kernel(images::KernelCmd),
    /// Print the shell completion script (completes image, kernel, VM and catalog
    /// names from the running daemon).
    ///
    /// Example: source <(banger completion bash)
    Completion {
        /// Shell.
        #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
        shell: String,
    },
    /// Long operations in flight on the daemon (create, start, stop, image build).
    #[command(alias = "ops")]
    Operations {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The background daemon (started automatically when needed).
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// banger as a system service: install, status, restart, uninstall, run.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Check this host: tools, /dev/kvm, privileges, guest agent, backends.
    ///
    /// Works without the daemon; prints the fix for each problem. Exit status 1 if any
    /// check fails.
    ///
    /// Example: banger doctor --json
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    Version(version::VersionArgs),
    Update(update::UpdateArgs),
    #[command(name = "__generate", hide = true)]
    Generate(generate::GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum DaemonCmd {
    /// Show whether bangerd runs, its pid and version (does not start it).
    Status,
    /// Stop bangerd. Running VMs keep running and are re-adopted on the next start.
    Stop,
}

fn main() -> ExitCode {
    // `COMPLETE=<shell> banger …` is a completion request from the shell: answer and exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = Cli::parse();
    if let Cmd::Completion { shell } = &cli.cmd {
        // The registration script is what `COMPLETE=<shell> banger` prints.
        std::env::set_var("COMPLETE", shell);
        clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui::print_error(&anyhow::Error::new(e).context("starting the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let layout = Layout::from_env();
        ui::notices::init(cli.verbose, &layout.runtime);
        let is_run = matches!(cli.cmd, Cmd::Vm(VmCmd::Run { .. }));
        match dispatch(cli.cmd, &layout).await {
            Ok(code) => code,
            Err(e) => {
                ui::print_error(&e);
                if is_run {
                    ExitCode::from(vm::EXIT_BANGER_FAILED)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

async fn dispatch(cmd: Cmd, layout: &Layout) -> anyhow::Result<ExitCode> {
    if let Cmd::Doctor { json } = cmd {
        return doctor::run(layout, json);
    }
    if let Cmd::Daemon(d) = cmd {
        return daemon_cmd(layout, d).await;
    }
    match cmd {
        Cmd::Version(a) => return version::run(a),
        Cmd::Update(a) => return update::run(layout, a).await,
        Cmd::Generate(a) => return generate::run(a),
        Cmd::System(s) => return system::run(s).await,
        _ => {}
    }
    let mut c = daemon::connect(layout).await?;
    match cmd {
        Cmd::Vm(v) => vm::dispatch(&mut c, v).await,
        Cmd::Image(i) => images::image(&mut c, i).await,
        Cmd::Kernel(k) => images::kernel(&mut c, k).await,
        Cmd::Completion { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Operations { json } => operations(&mut c, json).await,
        Cmd::Daemon(_) => Ok(ExitCode::SUCCESS),
        Cmd::Doctor { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Version(_) | Cmd::Update(_) | Cmd::Generate(_) | Cmd::System(_) => {
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn daemon_cmd(layout: &Layout, cmd: DaemonCmd) -> anyhow::Result<ExitCode> {
    let Some(ping) = daemon::ping_running(layout).await else {
        println!(
            "bangerd is not running (socket {})",
            layout.socket().display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    match cmd {
        DaemonCmd::Status => {
            println!(
                "bangerd {} running, pid {}, socket {}",
                ping.version,
                ping.pid,
                layout.socket().display()
            );
        }
        DaemonCmd::Stop => {
            daemon::stop(layout, ping.pid).await?;
            println!("bangerd stopped (pid {})", ping.pid);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn operations(c: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let ops = c.call::<OperationsList>(&NoParams {}, |_| {}).await?;
    render(json, &ops, |ops| {
        let mut t = ui::table(&["OP", "METHOD", "TARGET", "STAGE", "ELAPSED"]);
        for o in ops {
            t.add_row(vec![
                o.op_id.clone(),
                o.method.clone(),
                o.target.clone(),
                o.stage.clone(),
                format!("{:.1}s", o.elapsed_ms as f64 / 1000.0),
            ]);
        }
        println!("{t}");
    })
}

/// Print `value` as pretty JSON with `--json`, for people with `human` otherwise.
pub(crate) fn render<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}
