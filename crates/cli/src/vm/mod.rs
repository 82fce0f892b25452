//! `banger vm …`: the clap definitions ([`cmd`]) and one module per group of
//! commands: [`run`] (create, and run-then-delete), [`lifecycle`] (start, stop,
//! restart, kill, set, delete, prune), [`inspect`] (list, show, ports, stats),
//! [`console`] (logs), [`shell`] (ssh, exec, workspaces) and [`cp`].

mod attempts;
pub(crate) mod cmd;
mod console;
mod cp;
mod inspect;
mod lifecycle;
mod run;
mod shell;
mod wait;

pub use cmd::{ListArgs, VmCmd};
pub use console::strip_escapes;
pub use inspect::list;

use banger_rpc::Client;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit status of `vm run` when banger itself (not the command) failed.
pub const EXIT_BANGER_FAILED: u8 = 125;

/// Run one `vm` subcommand.
pub async fn dispatch(c: &mut Client, cmd: VmCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run(a) => run::run(c, a).await,
        VmCmd::Create {
            name,
            path,
            timings,
            no_start,
            sizes,
        } => run::create_cmd(c, name, path, timings, no_start, sizes).await,
        VmCmd::Start { names, timings } => lifecycle::start(c, names, timings).await,
        VmCmd::Stop { names } => lifecycle::stop(c, names).await,
        VmCmd::Restart { names } => lifecycle::restart(c, names).await,
        VmCmd::Kill { names } => lifecycle::kill(c, names).await,
        VmCmd::Prune { force } => lifecycle::prune(c, force).await,
        VmCmd::Set {
            name,
            cpus,
            memory,
            disk,
        } => lifecycle::set(c, name, cpus, memory, disk).await,
        VmCmd::Delete { names, force } => lifecycle::delete(c, names, force).await,
        VmCmd::Wait {
            name,
            condition,
            timeout,
        } => wait::wait(c, name, condition, timeout).await,
        VmCmd::Logs {
            name,
            follow,
            lines,
            since,
        } => console::logs(c, name, follow, lines, since).await,
        VmCmd::Ports { name } => inspect::ports(c, name).await,
        VmCmd::PortForward {
            name,
            mapping,
            remove,
        } => inspect::port_forward(c, name, mapping, remove).await,
        VmCmd::Stats { name } => inspect::stats(c, name).await,
        VmCmd::List(a) => inspect::list(c, a).await,
        VmCmd::Show { name } => inspect::show(c, name).await,
        VmCmd::Exec {
            name,
            auto_prepare,
            via_ssh,
            command,
        } => shell::exec(c, &name, auto_prepare, via_ssh, &command).await,
        VmCmd::Workspace(w) => shell::workspace(c, w).await,
        VmCmd::Cp { src, dest } => cp::cp(c, src, dest).await,
        VmCmd::Ssh {
            name,
            via_ssh,
            command,
        } => shell::ssh(c, &name, via_ssh, &command).await,
        VmCmd::HostKey { name, accept } => crate::network::host_key(c, name, accept).await,
    }
}

/// Ask a yes/no question on the terminal; `None` when there is no terminal to ask on.
fn confirm(question: &str) -> anyhow::Result<Option<bool>> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(Some(matches!(line.trim(), "y" | "Y" | "yes")))
}

/// An exit code from a command's status (255 for what does not fit).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// Collects the outcome of a verb applied to several names: failures are printed as
/// they happen and the exit status is the first failure's class.
#[derive(Default)]
pub struct Outcomes {
    first_failure: Option<ExitCode>,
}

impl Outcomes {
    /// Record a failure (printed now).
    pub fn failed(&mut self, e: &anyhow::Error) {
        crate::errors::print(e);
        self.first_failure
            .get_or_insert(ExitCode::from(crate::errors::classify(e).exit_code()));
    }

    /// The exit status.
    pub fn code(&self) -> ExitCode {
        self.first_failure.unwrap_or(ExitCode::SUCCESS)
    }
}
