//! `banger vm …`: the clap definitions ([`cmd`]) and one module per group of
//! commands: [`run`] (create, and run-then-delete), [`lifecycle`] (start, stop,
//! restart, kill, set, delete, prune), [`inspect`] (list, show, logs, ports, stats) and
//! [`shell`] (ssh, exec, workspaces).

mod cmd;
mod inspect;
mod lifecycle;
mod run;
mod shell;

pub use cmd::VmCmd;

use banger_rpc::Client;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit status of `vm run` when banger itself (not the command) failed.
pub const EXIT_BANGER_FAILED: u8 = 125;

/// Run one `vm` subcommand.
pub async fn dispatch(c: &mut Client, cmd: VmCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run {
            name,
            keep,
            timings,
            sizes,
            path,
            via_ssh,
            command,
        } => {
            let how = run::RunHow {
                keep,
                timings,
                via_ssh,
            };
            run::run(c, name, how, sizes, path, command).await
        }
        VmCmd::Create {
            name,
            timings,
            no_start,
            sizes,
        } => run::create_cmd(c, name, timings, no_start, sizes).await,
        VmCmd::Start { name, timings } => lifecycle::start(c, &name, timings).await,
        VmCmd::Stop { name } => lifecycle::stop(c, &name).await,
        VmCmd::Restart { name } => lifecycle::restart(c, &name).await,
        VmCmd::Kill { name } => lifecycle::kill(c, name).await,
        VmCmd::Prune { force } => lifecycle::prune(c, force).await,
        VmCmd::Set {
            name,
            cpus,
            memory,
            disk,
        } => lifecycle::set(c, name, cpus, memory, disk).await,
        VmCmd::Delete { names, force } => lifecycle::delete(c, names, force).await,
        VmCmd::Logs { name, follow } => inspect::logs(c, name, follow).await,
        VmCmd::Ports { name, json } => inspect::ports(c, name, json).await,
        VmCmd::Stats { name, json } => inspect::stats(c, name, json).await,
        VmCmd::List { json } => inspect::list(c, json).await,
        VmCmd::Show { name, json } => inspect::show(c, name, json).await,
        VmCmd::Exec {
            name,
            auto_prepare,
            via_ssh,
            command,
        } => shell::exec(c, &name, auto_prepare, via_ssh, &command).await,
        VmCmd::Workspace(w) => shell::workspace(c, w).await,
        VmCmd::Ssh {
            name,
            via_ssh,
            command,
        } => shell::ssh(c, &name, via_ssh, &command).await,
    }
}

/// Ask a yes/no question on the terminal; "no" when stdin is not a terminal.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// An exit code from a command's status (255 for what does not fit).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
