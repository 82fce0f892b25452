//! `vm ssh`, `vm exec` and `vm workspace …`: everything that runs in a VM, through
//! banger's guest agent (or OpenSSH with `--via-ssh`).

use super::cmd::WorkspaceCmd;
use super::exit_code;
use crate::exec::{self, Input, Request};
use crate::workspace::Via;
use crate::{ssh, workspace};
use anyhow::Context;
use banger_rpc::{Client, SshInfo, VmNameParams, VmSshInfo};
use std::io::IsTerminal;
use std::process::ExitCode;

/// `vm.ssh_info` for `name`.
pub async fn ssh_info(c: &mut Client, name: &str) -> anyhow::Result<SshInfo> {
    Ok(c.call::<VmSshInfo>(
        &VmNameParams {
            name: name.to_string(),
        },
        |_| {},
    )
    .await?)
}

/// Run ssh as a child while ignoring ctrl-c ourselves: the terminal delivers it to ssh
/// (and through `-t` to the guest), and we must survive to clean up.
pub async fn run_ssh(info: &SshInfo, remote: Option<String>) -> anyhow::Result<i32> {
    let tty =
        std::io::stdin().is_terminal() && (remote.is_none() || std::io::stdout().is_terminal());
    let mut cmd = tokio::process::Command::from(ssh::command(info, remote.as_deref(), tty));
    let mut child = cmd
        .spawn()
        .context("running ssh (is openssh-client installed?)")?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::signal::ctrl_c() => continue,
        }
    };
    Ok(status.code().unwrap_or(130))
}

/// `banger vm ssh NAME [--via-ssh] [-- CMD...]`.
pub async fn ssh(
    c: &mut Client,
    name: &str,
    via_ssh: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    if via_ssh {
        let info = ssh_info(c, name).await?;
        let remote = (!command.is_empty()).then(|| ssh::remote_line(command));
        return Ok(exit_code(run_ssh(&info, remote).await?));
    }
    let req = Request::from_argv(command).pty_if_interactive();
    let code = exec::run(name, req, Input::Inherit, &mut tokio::io::stdout()).await?;
    Ok(exit_code(code))
}

/// `banger vm exec NAME [--auto-prepare] [--via-ssh] [-- CMD...]`: in the workspace
/// when the VM has one, else in /root.
pub async fn exec(
    c: &mut Client,
    name: &str,
    auto_prepare: bool,
    via_ssh: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    if via_ssh {
        let info = ssh_info(c, name).await?;
        let w = workspace::recorded(c, name).await?;
        let w = workspace::check_moved(c, name, Via::Ssh(&info), w, auto_prepare).await?;
        let code = run_ssh(&info, Some(workspace::in_workspace(&w, command))).await?;
        return Ok(exit_code(code));
    }
    let mut req = Request::from_argv(command).pty_if_interactive();
    if let Some(w) = workspace::recorded_opt(c, name).await? {
        let w = workspace::check_moved(c, name, Via::Agent, w, auto_prepare).await?;
        req.cwd = Some(w.guest_path);
    }
    let code = exec::run(name, req, Input::Inherit, &mut tokio::io::stdout()).await?;
    Ok(exit_code(code))
}

/// `banger vm workspace prepare | export` (through the guest agent).
pub async fn workspace(c: &mut Client, cmd: WorkspaceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkspaceCmd::Prepare {
            name,
            path,
            guest_path,
            via_ssh,
        } => {
            let info;
            let via = if via_ssh {
                info = ssh_info(c, &name).await?;
                Via::Ssh(&info)
            } else {
                Via::Agent
            };
            workspace::prepare(c, &name, via, &path, guest_path.as_deref()).await?;
        }
        WorkspaceCmd::Export {
            name,
            output,
            commits,
            via_ssh,
        } => {
            let info;
            let via = if via_ssh {
                info = ssh_info(c, &name).await?;
                Via::Ssh(&info)
            } else {
                Via::Agent
            };
            let w = workspace::recorded(c, &name).await?;
            workspace::export(&name, via, &w, output, commits).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
