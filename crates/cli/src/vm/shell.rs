//! `vm ssh`, `vm exec` and `vm workspace …`: everything that runs in a VM, through
//! banger's guest agent (or OpenSSH with `--via-ssh`).

use super::cmd::WorkspaceCmd;
use super::exit_code;
use crate::errors::{fail, Class};
use crate::exec::{self, Input, Request};
use crate::workspace::Via;
use crate::{ssh, workspace};
use anyhow::Context;
use banger_rpc::{Client, SshInfo, VmNameParams, VmShow, VmSshInfo};
use std::io::IsTerminal;
use std::process::ExitCode;

/// `vm.ssh_info` for `name`, once the guest's sshd accepts connections: a VM is
/// running as soon as its agent answers, and sshd comes up a moment later (every
/// OpenSSH path — `--via-ssh`, `vm cp` — goes through here).
pub async fn ssh_info(c: &mut Client, name: &str) -> anyhow::Result<SshInfo> {
    let info = c
        .call::<VmSshInfo>(
            &VmNameParams {
                name: name.to_string(),
            },
            |_| {},
        )
        .await?;
    ssh::wait_sshd(&info).await?;
    Ok(info)
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
    if status.code() == Some(255) {
        // ssh's own message said why (unreachable, or a host key other than the
        // pinned one: "REMOTE HOST IDENTIFICATION HAS CHANGED").
        eprintln!(
            "banger: ssh to VM {} failed; if it reported a changed host key and you changed the guest's key on purpose, pin the new one with: banger vm host-key {} --accept",
            info.name, info.name
        );
    }
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
/// when the VM has one, else in `/root` (as `docker exec` runs in the container's
/// working directory). `--auto-prepare` without a workspace is refused: there is
/// nothing to re-ship.
pub async fn exec(
    c: &mut Client,
    name: &str,
    auto_prepare: bool,
    via_ssh: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let v = c
        .call::<VmShow>(
            &VmNameParams {
                name: name.to_string(),
            },
            |_| {},
        )
        .await?;
    if v.workspace.is_none() && auto_prepare {
        return Err(fail(
            Class::Usage,
            format!(
                "VM {name} has no workspace to re-ship; ship one with \
                 banger vm workspace prepare {name} PATH"
            ),
        ));
    }
    if via_ssh {
        let info = ssh_info(c, name).await?;
        let remote = match v.workspace {
            Some(w) => {
                let w = workspace::check_moved(c, name, Via::Ssh(&info), w, auto_prepare).await?;
                workspace::in_workspace(&w, command)
            }
            None => in_root(command),
        };
        return Ok(exit_code(run_ssh(&info, Some(remote)).await?));
    }
    let mut req = Request::from_argv(command).pty_if_interactive();
    match v.workspace {
        Some(w) => {
            let w = workspace::check_moved(c, name, Via::Agent, w, auto_prepare).await?;
            req.cwd = Some(w.guest_path);
        }
        None => req.cwd = Some("/root".into()),
    }
    let code = exec::run(name, req, Input::Inherit, &mut tokio::io::stdout()).await?;
    Ok(exit_code(code))
}

/// The shell line that runs `argv` in `/root` (a login shell there when empty).
fn in_root(argv: &[String]) -> String {
    if argv.is_empty() {
        "cd /root && exec \"${SHELL:-/bin/sh}\" -l".to_string()
    } else {
        format!("cd /root && {}", ssh::remote_line(argv))
    }
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
            let w = workspace::prepare(c, &name, via, &path, guest_path.as_deref()).await?;
            if crate::output::json() {
                crate::output::print_json(&w)?;
            }
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
