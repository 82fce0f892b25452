//! From an exec request to a running child: who, where, with what environment, on
//! pipes or a pty.

use crate::pty;
use crate::reap::{self, OnExit};
use crate::users::{self, Account};
use banger_channel::{Command as Cmd, ErrorKind, ErrorReply, Exec, WinSize};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `PATH` of every exec unless the request sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `TERM` of a pty exec unless the request sets its own.
const DEFAULT_TERM: &str = "xterm-256color";

/// What to start, checked and resolved.
#[derive(Debug)]
pub struct Plan {
    program: String,
    args: Vec<String>,
    arg0: Option<String>,
    env: Vec<(String, String)>,
    cwd: String,
    account: Account,
    pty: Option<WinSize>,
}

/// A started child: its pid and the agent's ends of its stdio.
pub struct Child {
    /// Its pid (also its process group and session: every exec starts a new session).
    pub pid: libc::pid_t,
    /// Where its input goes (a pipe, or a duplicate of the pty master).
    pub stdin: OwnedFd,
    /// Where its output comes from (a pipe, or the pty master).
    pub stdout: OwnedFd,
    /// Its error output (pipes only: on a pty it shares stdout).
    pub stderr: Option<OwnedFd>,
    /// The pty master, for resizes and finding the foreground process group.
    pub master: Option<OwnedFd>,
}

fn invalid(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::Invalid, msg)
}

fn no_nul(what: &str, s: &str) -> Result<(), ErrorReply> {
    if s.contains('\0') {
        return Err(invalid(format!("the {what} contains a NUL byte")));
    }
    Ok(())
}

/// Check `req` and resolve its user, directory, environment and program.
pub fn plan(req: &Exec) -> Result<Plan, ErrorReply> {
    let account = users::resolve(req.user.as_ref())?;
    let (program, args, arg0) = match &req.command {
        Cmd::Argv(v) => {
            let Some((p, rest)) = v.split_first() else {
                return Err(invalid("the command is empty"));
            };
            if p.is_empty() {
                return Err(invalid("the program name is empty"));
            }
            (p.clone(), rest.to_vec(), None)
        }
        Cmd::Shell(line) => ("/bin/sh".to_string(), vec!["-c".into(), line.clone()], None),
        Cmd::LoginShell => {
            let shell = if Path::new(&account.shell).is_file() {
                account.shell.clone()
            } else {
                "/bin/sh".to_string()
            };
            let base = shell.rsplit('/').next().unwrap_or("sh").to_string();
            (shell, vec![], Some(format!("-{base}")))
        }
    };
    no_nul("program", &program)?;
    for a in &args {
        no_nul("argument list", a)?;
    }
    let cwd = match &req.cwd {
        Some(d) => {
            no_nul("working directory", d)?;
            if !d.starts_with('/') {
                return Err(invalid(format!(
                    "the working directory {d:?} is not an absolute path"
                )));
            }
            if !Path::new(d).is_dir() {
                return Err(ErrorReply::new(
                    ErrorKind::NotFound,
                    format!("no directory {d} in the guest"),
                ));
            }
            d.clone()
        }
        None if Path::new(&account.home).is_dir() => account.home.clone(),
        None => "/".to_string(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    if !req.clear_env {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
        env.push(("HOME".into(), account.home.clone()));
        env.push(("USER".into(), account.name.clone()));
        env.push(("LOGNAME".into(), account.name.clone()));
        env.push(("SHELL".into(), account.shell.clone()));
        if req.pty.is_some() {
            env.push(("TERM".into(), DEFAULT_TERM.into()));
        }
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!(
                "{k:?} is not an environment variable name"
            )));
        }
        no_nul("environment", k)?;
        no_nul("environment", v)?;
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(Plan {
        program,
        args,
        arg0,
        env,
        cwd,
        account,
        pty: req.pty,
    })
}

/// In the forked child: drop to the account (only when the agent is root).
fn switch_user(uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls with valid arguments; `groups` outlives the call.
    unsafe {
        if libc::geteuid() == 0 {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        } else if libc::geteuid() != uid {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

fn spawn_error(program: &str, e: std::io::Error) -> ErrorReply {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorReply::new(
            ErrorKind::NotFound,
            format!("{program}: command not found in the guest"),
        ),
        std::io::ErrorKind::PermissionDenied => ErrorReply::new(
            ErrorKind::NotExecutable,
            format!("{program}: cannot execute ({e})"),
        ),
        _ if e.raw_os_error() == Some(libc::ENOEXEC) => ErrorReply::new(
            ErrorKind::NotExecutable,
            format!("{program}: not an executable format the guest can run ({e})"),
        ),
        _ => ErrorReply::new(ErrorKind::Failed, format!("starting {program} failed: {e}")),
    }
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, ErrorReply> {
    fd.try_clone()
        .map_err(|e| ErrorReply::new(ErrorKind::Failed, format!("dup the pty: {e}")))
}

/// Start the planned process; `on_exit` gets its wait status (see [`reap`]).
pub fn spawn(plan: &Plan, on_exit: OnExit) -> Result<Child, ErrorReply> {
    let mut cmd = Command::new(&plan.program);
    cmd.args(&plan.args);
    if let Some(a0) = &plan.arg0 {
        cmd.arg0(a0);
    }
    cmd.env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd);
    let (uid, gid) = (plan.account.uid, plan.account.gid);
    let groups: Vec<libc::gid_t> = plan.account.groups.clone();
    let tty = match plan.pty {
        Some(ws) => {
            let p = pty::open(ws.rows, ws.cols)
                .map_err(|e| ErrorReply::new(ErrorKind::Failed, e.to_string()))?;
            cmd.stdin(Stdio::from(dup(&p.slave)?))
                .stdout(Stdio::from(dup(&p.slave)?))
                .stderr(Stdio::from(p.slave));
            pty::set_nonblocking(&p.master)
                .map_err(|e| ErrorReply::new(ErrorKind::Failed, e.to_string()))?;
            Some(p.master)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let with_tty = tty.is_some();
    // SAFETY: the closure only makes async-signal-safe calls on data prepared before
    // the fork (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            reap::reset_child_signals()?;
            if with_tty {
                pty::make_controlling()?;
            } else if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            switch_user(uid, gid, &groups)
        });
    }
    let mut child = reap::spawn(&mut cmd, on_exit).map_err(|e| spawn_error(&plan.program, e))?;
    // The parent's copies of the pty's slave went with `cmd`'s stdio; drop it now so
    // the master reads end-of-file once the program's side is closed.
    drop(cmd);
    let pid = child.id() as libc::pid_t;
    let (stdin, stdout, stderr) = match &tty {
        Some(m) => (dup(m)?, dup(m)?, None),
        None => {
            let missing = || ErrorReply::new(ErrorKind::Failed, "the child's pipes are missing");
            (
                OwnedFd::from(child.stdin.take().ok_or_else(missing)?),
                OwnedFd::from(child.stdout.take().ok_or_else(missing)?),
                Some(OwnedFd::from(child.stderr.take().ok_or_else(missing)?)),
            )
        }
    };
    Ok(Child {
        pid,
        stdin,
        stdout,
        stderr,
        master: tty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn exec(command: Cmd) -> Exec {
        Exec {
            command,
            env: BTreeMap::new(),
            clear_env: false,
            cwd: None,
            user: None,
            pty: None,
        }
    }

    #[test]
    fn requests_are_checked_before_anything_starts() {
        let e = plan(&exec(Cmd::Argv(vec![]))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        let mut r = exec(Cmd::Argv(vec!["true".into()]));
        r.cwd = Some("relative".into());
        assert_eq!(plan(&r).unwrap_err().kind, ErrorKind::Invalid);
        r.cwd = Some("/no/such/dir/here".into());
        assert_eq!(plan(&r).unwrap_err().kind, ErrorKind::NotFound);
        r.cwd = None;
        r.env.insert("A=B".into(), "x".into());
        assert_eq!(plan(&r).unwrap_err().kind, ErrorKind::Invalid);
        let r = exec(Cmd::Argv(vec!["a\0b".into()]));
        assert_eq!(plan(&r).unwrap_err().kind, ErrorKind::Invalid);
    }

    #[test]
    fn the_environment_is_the_base_one_plus_the_request() {
        let mut r = exec(Cmd::Shell("env".into()));
        r.env.insert("PATH".into(), "/x".into());
        r.env.insert("FOO".into(), "bar".into());
        r.pty = Some(WinSize { rows: 1, cols: 1 });
        let p = plan(&r).unwrap();
        let get = |k: &str| p.env.iter().find(|(e, _)| e == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/x"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("TERM"), Some(DEFAULT_TERM));
        assert_eq!(p.env.iter().filter(|(e, _)| e == "PATH").count(), 1);
        assert_eq!(p.program, "/bin/sh");
        r.clear_env = true;
        assert_eq!(plan(&r).unwrap().env.len(), 2);
    }
}
