//! `vm.exec`: a process in a running VM, relayed to the CLI.
//!
//! The daemon owns the one agent connection per VM (a virtio-serial chardev accepts one
//! host client), so the CLI cannot talk to the agent itself. It calls `vm.exec` on a
//! dedicated RPC connection; the daemon opens the exec session on the VM's agent
//! connection and waits for the agent's first answer (`started`, or `error` for a
//! missing program or user). Then it answers the call with the session number, and the
//! RPC connection becomes a `banger-channel` connection (the CLI the client, the daemon
//! the server) on which both attach that one session. The agent's first answer is
//! passed on, then [`splice`] relays stdin, stdout, stderr, signals, resizes and the
//! exit status until the process ends or either side leaves.
//!
//! The image's recorded run settings (OCI `Env`, `WorkingDir`, `User`, `Entrypoint`)
//! are applied here, so every client gets the same `docker run` behaviour.

use super::guest::{GuestError, Target};
use super::query::not_running;
use crate::app::App;
use crate::error::{DaemonError, Result};
use crate::handles;
use banger_channel::tokio::{splice, Config, Connection, Session};
use banger_channel::{Command, Control, Exec, Open, User};
use banger_model::{RunConfig, VmState};
use banger_rpc::{CallCtx, SessionResult, Upgraded, VmExecParams, RELAYED_SESSION};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the agent may take to start a process (fork, exec, a user lookup).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CLI may take to speak the channel after the result line.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CLI gets to read the exit status and close after the process ended.
const LINGER: Duration = Duration::from_secs(5);

/// `vm.exec`: start the process, then hand the connection to the relay.
pub async fn exec(app: &App, ctx: &CallCtx, p: VmExecParams) -> Result<SessionResult> {
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    let h = handles::read(&app.layout.vm_dir(&rec.id))
        .filter(|_| rec.state == VmState::Running)
        .ok_or_else(|| not_running(&p.name, rec.state))?;
    let run = app
        .db(|s| s.get_image(&rec.image_id))
        .map(|i| i.run_config)
        .unwrap_or_default();
    let request = exec_request(p, &run)?;
    let target = Target {
        id: &rec.id,
        name: rec.name.as_str(),
        handles: &h.vmm,
    };
    let what = format!("starting a command in VM {}", rec.name);
    let up = app
        .guest
        .open(target, &Open::Exec(request))
        .await
        .map_err(DaemonError::guest(what.clone(), String::new()))?;
    let failed = |why: String| DaemonError::Guest {
        what: what.clone(),
        source: Box::new(GuestError::Other(why)),
        console: String::new(),
    };
    let first = match tokio::time::timeout(START_TIMEOUT, up.control()).await {
        Ok(Ok(Some(c @ (Control::Started { .. } | Control::Error(_))))) => c,
        Ok(Ok(Some(other))) => {
            return Err(failed(format!(
                "the guest agent answered {other:?} instead of started; its agent is broken \
                 (see banger vm logs {})",
                rec.name
            )))
        }
        Ok(Ok(None)) => {
            return Err(failed(
                "the guest agent closed the session without answering".into(),
            ))
        }
        Ok(Err(e)) => return Err(failed(format!("the guest agent's channel failed: {e}"))),
        Err(_) => {
            return Err(failed(format!(
                "the guest agent did not start it within {START_TIMEOUT:?}"
            )))
        }
    };
    let vm = rec.name.to_string();
    ctx.upgrade(move |io| relay(io, up, first, vm));
    Ok(SessionResult {
        session: RELAYED_SESSION,
    })
}

/// Speak the channel on the upgraded connection and relay the one session.
async fn relay(io: Upgraded, up: Session, first: Control, vm: String) {
    let conn = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        Connection::handshake(io, Config::server(software())),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%vm, "exec client's channel handshake failed: {e}");
            up.close();
            return;
        }
        Err(_) => {
            tracing::debug!(%vm, "exec client never spoke the channel");
            up.close();
            return;
        }
    };
    let down = match conn.attach(RELAYED_SESSION) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%vm, "attaching the exec session failed: {e}");
            up.close();
            return;
        }
    };
    let refused = matches!(first, Control::Error(_));
    if down.send(&first).is_err() || refused {
        up.close();
        down.close();
    } else {
        let end = splice(&down, &up).await;
        tracing::debug!(%vm, ?end, "exec relay ended");
    }
    // The client reads what is queued (the exit status) and closes; bounded.
    let _ = tokio::time::timeout(LINGER, conn.closed()).await;
}

fn software() -> String {
    format!("bangerd {}", banger_buildinfo::VERSION)
}

/// The agent's exec request: the caller's params over the image's run settings.
pub(crate) fn exec_request(p: VmExecParams, run: &RunConfig) -> Result<Exec> {
    let mut env: BTreeMap<String, String> = run
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(p.env);
    let command = match p.command {
        Command::Argv(argv) if p.entrypoint && !run.entrypoint.is_empty() => {
            Command::Argv(run.entrypoint.iter().cloned().chain(argv).collect())
        }
        // `vm run IMAGE` without a command runs what the image says, as `docker run`.
        Command::LoginShell
            if p.entrypoint && !(run.entrypoint.is_empty() && run.cmd.is_empty()) =>
        {
            Command::Argv(run.entrypoint.iter().chain(&run.cmd).cloned().collect())
        }
        Command::Argv(argv) if argv.is_empty() => {
            return Err(DaemonError::BadRequest(
                "an empty command: name a program, or ask for a shell".into(),
            ))
        }
        c => c,
    };
    let user = p
        .user
        .or_else(|| run.user.clone())
        .map(|u| parse_user(&u))
        .transpose()?;
    Ok(Exec {
        command,
        env,
        clear_env: false,
        cwd: p.cwd.or_else(|| run.working_dir.clone()),
        user,
        pty: p.pty,
    })
}

/// `name`, `uid`, or OCI's `user:group` (the group part is left to the guest's
/// `/etc/passwd` and `/etc/group`).
fn parse_user(u: &str) -> Result<User> {
    let name = u.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return Err(DaemonError::BadRequest(format!(
            "user {u:?} names nobody: give a user name or uid"
        )));
    }
    Ok(match name.parse::<u32>() {
        Ok(uid) => User::Uid(uid),
        Err(_) => User::Name(name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(command: Command, entrypoint: bool) -> VmExecParams {
        VmExecParams {
            name: "dev".into(),
            command,
            env: BTreeMap::from([("A".into(), "caller".into())]),
            cwd: None,
            user: None,
            pty: None,
            entrypoint,
        }
    }

    #[test]
    fn the_image_settings_apply_under_the_callers() {
        let run = RunConfig {
            env: vec!["A=image".into(), "B=image".into(), "junk".into()],
            entrypoint: vec!["python3".into()],
            cmd: vec![],
            user: Some("1000:1000".into()),
            working_dir: Some("/srv".into()),
        };
        let e = exec_request(params(Command::Argv(vec!["-V".into()]), true), &run).unwrap();
        assert_eq!(
            e.command,
            Command::Argv(vec!["python3".into(), "-V".into()])
        );
        assert_eq!(e.env["A"], "caller");
        assert_eq!(e.env["B"], "image");
        assert_eq!(e.env.len(), 2);
        assert_eq!(e.user, Some(User::Uid(1000)));
        assert_eq!(e.cwd.as_deref(), Some("/srv"));
        // vm exec leaves the entrypoint off, as docker exec does.
        let e = exec_request(params(Command::Argv(vec!["ls".into()]), false), &run).unwrap();
        assert_eq!(e.command, Command::Argv(vec!["ls".into()]));
        assert!(exec_request(params(Command::Argv(vec![]), false), &run).is_err());
        // No command: the image's entrypoint and cmd (vm run), a login shell (vm ssh).
        let mut with_cmd = run.clone();
        with_cmd.cmd = vec!["-i".into()];
        let e = exec_request(params(Command::LoginShell, true), &with_cmd).unwrap();
        assert_eq!(
            e.command,
            Command::Argv(vec!["python3".into(), "-i".into()])
        );
        let e = exec_request(params(Command::LoginShell, false), &with_cmd).unwrap();
        assert_eq!(e.command, Command::LoginShell);
        assert_eq!(parse_user("dev").unwrap(), User::Name("dev".into()));
        assert!(parse_user(":1").is_err());
    }
}
