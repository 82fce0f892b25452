//! `vm ssh`, `vm exec` and `vm workspace …`: everything that opens an ssh session.

use super::cmd::WorkspaceCmd;
use super::exit_code;
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

/// `banger vm ssh NAME [-- CMD...]`.
pub async fn ssh(c: &mut Client, name: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let info = ssh_info(c, name).await?;
    let remote = (!command.is_empty()).then(|| ssh::remote_line(command));
    Ok(exit_code(run_ssh(&info, remote).await?))
}

/// `banger vm exec NAME [--auto-prepare] [-- CMD...]`: in the workspace.
pub async fn exec(
    c: &mut Client,
    name: &str,
    auto_prepare: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let info = ssh_info(c, name).await?;
    let w = workspace::recorded(c, name).await?;
    let w = workspace::check_moved(c, name, &info, w, auto_prepare).await?;
    let code = run_ssh(&info, Some(workspace::in_workspace(&w, command))).await?;
    Ok(exit_code(code))
}

/// `banger vm workspace prepare | export`.
pub async fn workspace(c: &mut Client, cmd: WorkspaceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkspaceCmd::Prepare {
            name,
            path,
            guest_path,
        } => {
            let info = ssh_info(c, &name).await?;
            workspace::prepare(c, &name, &info, &path, guest_path.as_deref()).await?;
        }
        WorkspaceCmd::Export {
            name,
            output,
            commits,
        } => {
            let info = ssh_info(c, &name).await?;
            let w = workspace::recorded(c, &name).await?;
            workspace::export(&info, &w, output, commits).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
