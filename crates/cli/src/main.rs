//! `banger`: disposable Linux development VMs.
//!
//! The CLI is thin on purpose: it parses, calls bangerd over its unix socket and
//! renders. Everything stateful happens in the daemon.

mod capture;
mod complete;
mod daemon;
mod daemon_cmd;
mod doctor;
mod errors;
mod events;
mod exec;
mod generate;
mod images;
mod network;
mod output;
mod schema;
mod ssh;
mod ssh_config;
mod system;
mod ui;
mod update;
mod version;
mod vm;
mod warm;
mod workspace;

use banger_model::Layout;
use banger_rpc::{Client, NoParams, OperationsList};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vm::VmCmd;

/// The exit-status table printed under `banger --help` (docs/cli.md has it too).
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    banger failed (the message says what failed and what to do next)
  2    the command line was refused
  3    not found        4  already exists   5  invalid request
  6    daemon unavailable   7  unauthorized   8  timeout (vm wait)
  130  interrupted (Ctrl-C)
  vm run, vm exec, vm ssh: the command's own status; vm run exits 125 when banger
  itself failed (including a refused command line), like docker run.

Output: --json (or BANGER_OUTPUT=json) prints results as JSON on stdout and errors as
{\"error\":{\"code\",\"message\",\"op_id\",\"hint\"}} on stderr; progress goes to stderr only.";

#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version = banger_buildinfo::VERSION_LINE,
    about = "Disposable Linux development VMs: boot, run, throw away.",
    after_long_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// Show every notice on every command (e.g. that VMs run under TCG emulation,
    /// otherwise shown once per host boot).
    #[arg(long, global = true)]
    verbose: bool,
    /// Print results as JSON on stdout and errors as JSON on stderr [env: BANGER_OUTPUT=json].
    #[arg(long, global = true)]
    json: bool,
    /// Where progress of long calls goes (always stderr): auto (a spinner on a terminal,
    /// one line per stage otherwise, none with --json), plain, json or none.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "BANGER_PROGRESS",
        hide_env = true
    )]
    progress: Option<output::ProgressMode>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCmd),
    /// List VMs (the same as banger vm list).
    #[command(verbatim_doc_comment)]
    Ps(vm::ListArgs),
    /// Build, pull, register, promote, list and delete base images.
    #[command(subcommand)]
    Image(images::ImageCmd),
    /// The kernel store: pull, import, list, show and remove kernels.
    #[command(subcommand)]
    Kernel(images::KernelCmd),
    /// Print the shell completion script (completes image, kernel, VM and catalog
    /// names from the running daemon).
    ///
    /// Examples:
    ///   source <(banger completion bash)
    ///   banger completion fish > ~/.config/fish/completions/banger.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// Shell.
        #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
        shell: String,
    },
    /// The host side of guest networking: bridge, .vm DNS, isolation, NAT.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Make `ssh NAME.vm`, scp and rsync work from any terminal (one Include line in
    /// ~/.ssh/config, removable byte for byte).
    #[command(subcommand, name = "ssh-config")]
    SshConfig(network::SshConfigCmd),
    /// Long operations in flight on the daemon (create, start, stop, image build).
    #[command(visible_alias = "ops")]
    Operations,
    /// Stream VM state changes (creating, running, stopped, error, deleted) as they
    /// happen, until interrupted; --json prints one JSON object per line.
    ///
    /// Example:
    ///   banger events --json | jq -c 'select(.state == "running")'
    #[command(verbatim_doc_comment)]
    Events,
    /// The background daemon (started automatically when needed).
    #[command(subcommand)]
    Daemon(daemon_cmd::DaemonCmd),
    /// banger as a system service: install, status, restart, uninstall, run.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Check this host: tools, /dev/kvm, privileges, guest agent, backends.
    ///
    /// Works without the daemon; prints the fix for each problem.
    ///
    /// Example:
    ///   banger doctor --json
    ///
    /// Exit status: 1 if any check fails.
    #[command(verbatim_doc_comment)]
    Doctor,
    Version(version::VersionArgs),
    Update(update::UpdateArgs),
    #[command(name = "__generate", hide = true)]
    Generate(generate::GenerateArgs),
}

/// Whether the raw arguments are a `vm run` (whose failures exit 125 even when the
/// command line itself is refused).
fn args_are_vm_run(args: &[std::ffi::OsString]) -> bool {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    words == ["vm", "run"]
}

fn main() -> ExitCode {
    // `COMPLETE=<shell> banger …` is a completion request from the shell: answer and exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let is_run = args_are_vm_run(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => return usage_error(e, &args, is_run),
    };
    output::init(cli.json, cli.progress);
    if let Cmd::Completion { shell } = &cli.cmd {
        return completion(shell);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::new(e).context("starting the async runtime");
            return errors::report(&e, is_run);
        }
    };
    rt.block_on(async {
        let layout = Layout::for_client();
        ui::notices::init(cli.verbose, &layout.runtime);
        let r = if owns_ctrl_c(&cli.cmd) {
            dispatch(cli.cmd, &layout).await
        } else {
            tokio::select! {
                r = dispatch(cli.cmd, &layout) => r,
                _ = tokio::signal::ctrl_c() => Err(errors::fail(
                    errors::Class::Interrupted,
                    "interrupted; a daemon operation already under way carries on \
                     (`banger operations` shows it)",
                )),
            }
        };
        match r {
            Ok(code) => code,
            Err(e) => errors::report(&e, is_run),
        }
    })
}

/// Whether the command decides itself what Ctrl-C means: forwarding it to the guest
/// (`vm run`, `vm exec`, `vm ssh`), or ending a stream it was asked to follow. Every
/// other command is abandoned on Ctrl-C with the `interrupted` error (exit 130), so
/// a script gets the JSON error rather than a process killed by a signal. `update`
/// keeps the default disposition (the signal ends the process), as before: dropping
/// its swap at an arbitrary await from inside would be no safer than that.
fn owns_ctrl_c(cmd: &Cmd) -> bool {
    match cmd {
        Cmd::Events | Cmd::Update(_) | Cmd::System(system::SystemCmd::Run { .. }) => true,
        Cmd::Vm(v) => matches!(
            v,
            VmCmd::Run(_)
                | VmCmd::Exec { .. }
                | VmCmd::Ssh { .. }
                | VmCmd::Logs { follow: true, .. }
        ),
        Cmd::Daemon(daemon_cmd::DaemonCmd::Logs { follow, .. }) => *follow,
        _ => false,
    }
}

/// A refused command line: clap's own rendering for people (help and version are not
/// errors), the JSON error in JSON mode; exit 2, or 125 for `vm run`.
fn usage_error(e: clap::Error, args: &[std::ffi::OsString], is_run: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let json = output::env_json() || args.iter().any(|a| a == "--json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand && !json
    {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(errors::Class::Usage.exit_code())
        } else {
            ExitCode::SUCCESS
        };
    }
    if !json {
        let _ = e.print();
    } else {
        output::init(true, None);
        let msg = e.render().to_string();
        let first = msg
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ");
        errors::print(&errors::fail(errors::Class::Usage, first));
    }
    if is_run {
        ExitCode::from(vm::EXIT_BANGER_FAILED)
    } else {
        ExitCode::from(errors::Class::Usage.exit_code())
    }
}

/// What `completion SHELL --json` prints.
#[derive(Debug, serde::Serialize)]
struct Completion {
    /// The shell it is for.
    shell: String,
    /// The registration script.
    script: String,
}

/// `banger completion SHELL`: the registration script is what `COMPLETE=<shell>
/// banger` prints, for the `banger` on PATH.
fn completion(shell: &str) -> ExitCode {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let shells: [(&str, &dyn EnvCompleter); 5] = [
        ("bash", &Bash),
        ("zsh", &Zsh),
        ("fish", &Fish),
        ("elvish", &Elvish),
        ("powershell", &Powershell),
    ];
    let Some((_, sh)) = shells.iter().find(|(n, _)| *n == shell) else {
        return ExitCode::from(errors::Class::Usage.exit_code());
    };
    let mut buf = vec![];
    if let Err(e) = sh.write_registration("COMPLETE", "banger", "banger", "banger", &mut buf) {
        return errors::report(&anyhow::Error::new(e), false);
    }
    let script = String::from_utf8_lossy(&buf).into_owned();
    if output::json() {
        let _ = output::print_json(&Completion {
            shell: shell.to_string(),
            script,
        });
    } else {
        print!("{script}");
    }
    ExitCode::SUCCESS
}

async fn dispatch(cmd: Cmd, layout: &Layout) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Doctor => return doctor::run(layout, output::json()).await,
        Cmd::Daemon(d) => return daemon_cmd::run(layout, d).await,
        Cmd::Version(a) => return version::run(a),
        Cmd::Update(a) => return update::run(layout, a).await,
        Cmd::Generate(a) => return generate::run(a),
        Cmd::System(s) => return system::run(s).await,
        Cmd::SshConfig(s) => return network::ssh_config_cmd(layout, s).await,
        Cmd::Events => return events::run().await,
        _ => {}
    }
    let mut c = daemon::connect(layout).await?;
    match cmd {
        Cmd::Vm(v) => vm::dispatch(&mut c, v).await,
        Cmd::Ps(a) => vm::list(&mut c, a).await,
        Cmd::Image(i) => images::image(&mut c, i).await,
        Cmd::Kernel(k) => images::kernel(&mut c, k).await,
        Cmd::Operations => operations(&mut c).await,
        Cmd::Network(n) => network::network(&mut c, n).await,
        Cmd::Completion { .. }
        | Cmd::Events
        | Cmd::SshConfig(_)
        | Cmd::Daemon(_)
        | Cmd::Doctor
        | Cmd::Version(_)
        | Cmd::Update(_)
        | Cmd::Generate(_)
        | Cmd::System(_) => Ok(ExitCode::SUCCESS),
    }
}

async fn operations(c: &mut Client) -> anyhow::Result<ExitCode> {
    let ops = c.call::<OperationsList>(&NoParams {}, |_| {}).await?;
    output::render(&ops, |ops| {
        let mut t = ui::table(&["OP", "METHOD", "TARGET", "STAGE", "ELAPSED"]);
        for o in ops {
            t.add_row(vec![
                o.op_id.clone(),
                o.method.clone(),
                o.target.clone(),
                ui::stage_label(&o.stage).to_string(),
                format!("{:.1}s", o.elapsed_ms as f64 / 1000.0),
            ]);
        }
        ui::print_table(&t);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_valid() {
        Cli::command().debug_assert();
    }

    /// Examples are separate, verbatim lines (they used to run together into one
    /// paragraph), and commands with their own exit statuses say so.
    #[test]
    fn help_keeps_examples_on_their_own_lines() {
        for (path, example) in [
            (&["vm", "run"][..], "  banger vm run ./myrepo -- make test"),
            (&["vm", "exec"][..], "  banger vm exec dev -- cargo test"),
            (&["vm", "cp"][..], "  banger vm cp ./build dev:/root/"),
            (
                &["image", "pull"][..],
                "  banger image pull debian-bookworm",
            ),
            (
                &["image", "register"][..],
                "  banger image register devbox --rootfs ./rootfs.ext4",
            ),
        ] {
            let mut cmd = Cli::command();
            let mut sub = &mut cmd;
            for p in path {
                sub = sub.find_subcommand_mut(p).unwrap();
            }
            let help = sub.render_long_help().to_string();
            assert!(help.lines().any(|l| l == example), "{path:?}: {help}");
        }
        let mut cmd = Cli::command();
        let run = cmd
            .find_subcommand_mut("vm")
            .unwrap()
            .find_subcommand_mut("run")
            .unwrap();
        assert!(run.render_long_help().to_string().contains("Exit status"));
        assert!(Cli::command()
            .render_long_help()
            .to_string()
            .contains("130"));
    }

    #[test]
    fn vm_run_is_recognised_before_parsing() {
        let a = |s: &[&str]| -> Vec<std::ffi::OsString> { s.iter().map(|x| x.into()).collect() };
        assert!(args_are_vm_run(&a(&["banger", "vm", "run", "--bogus"])));
        assert!(args_are_vm_run(&a(&["banger", "--json", "vm", "run"])));
        assert!(!args_are_vm_run(&a(&["banger", "vm", "list"])));
    }
}
