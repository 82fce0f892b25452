//! `vm ssh`, `vm exec` and `vm workspace …`: everything that opens an ssh session.

use super::cmd::WorkspaceCmd;
use super::exit_code;
use crate::errors::{fail, Class};
use crate::{ssh, workspace};
use anyhow::Context;
use banger_rpc::{Client, SshInfo, VmNameParams, VmShow, VmSshInfo};
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

/// `banger vm exec NAME [--auto-prepare] [-- CMD...]`: in the workspace when the VM
/// has one, else in `/root` (as `docker exec` runs in the container's working
/// directory). `--auto-prepare` without a workspace is refused: there is nothing to
/// re-ship.
pub async fn exec(
    c: &mut Client,
    name: &str,
    auto_prepare: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let info = ssh_info(c, name).await?;
    let v = c
        .call::<VmShow>(
            &VmNameParams {
                name: name.to_string(),
            },
            |_| {},
        )
        .await?;
    let remote = match v.workspace {
        Some(w) => {
            let w = workspace::check_moved(c, name, &info, w, auto_prepare).await?;
            workspace::in_workspace(&w, command)
        }
        None if auto_prepare => {
            return Err(fail(
                Class::Usage,
                format!(
                    "VM {name} has no workspace to re-ship; ship one with \
                     banger vm workspace prepare {name} PATH"
                ),
            ))
        }
        None => in_root(command),
    };
    Ok(exit_code(run_ssh(&info, Some(remote)).await?))
}

/// The shell line that runs `argv` in `/root` (a login shell there when empty).
fn in_root(argv: &[String]) -> String {
    if argv.is_empty() {
        "cd /root && exec \"${SHELL:-/bin/sh}\" -l".to_string()
    } else {
        format!("cd /root && {}", ssh::remote_line(argv))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_workspace_commands_run_in_root() {
        assert_eq!(in_root(&["pwd".to_string()]), "cd /root && pwd");
        assert_eq!(
            in_root(&["sh".into(), "-c".into(), "echo a b".into()]),
            "cd /root && sh -c 'echo a b'"
        );
        assert!(in_root(&[]).ends_with("-l"));
    }
}
