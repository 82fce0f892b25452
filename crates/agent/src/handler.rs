//! What the agent does for each session the host opens.

use crate::{exec, files, identity, info, reap};
use banger_channel::sync::{ControlSink, Handler, Session};
use banger_channel::{Control, Done, ErrorKind, ErrorReply, Open};

/// How the agent runs, which decides how it powers the guest off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// As the guest's init (`banger.init=agent`): it powers off itself.
    AsInit,
    /// As a service under the image's init (systemd): it asks that init.
    AsService,
    /// On a unix socket (tests, debugging on a host): shutdown is refused.
    OnUnixSocket,
}

impl Runs {
    fn name(self) -> &'static str {
        match self {
            Runs::AsInit => "agent",
            Runs::AsService => "service",
            Runs::OnUnixSocket => "socket",
        }
    }
}

/// The agent's [`Handler`].
#[derive(Debug)]
pub struct Agent {
    /// How this agent runs.
    pub runs: Runs,
}

fn answer(session: &Session, r: Result<Control, ErrorReply>) {
    let c = r.unwrap_or_else(Control::Error);
    let _ = session.send(&c);
    session.close();
}

/// Run `f` on its own thread (requests that move data must not block the reader).
fn worker(session: Session, f: impl FnOnce(&Session) + Send + 'static) {
    let s = session.clone();
    let started = std::thread::Builder::new()
        .name("transfer".into())
        .stack_size(256 << 10)
        .spawn(move || f(&s));
    if let Err(e) = started {
        answer(
            &session,
            Err(ErrorReply::new(
                ErrorKind::Failed,
                format!("the agent cannot start a thread: {e}"),
            )),
        );
    }
}

impl Handler for Agent {
    fn open(&self, request: Open, session: Session) -> ControlSink {
        match request {
            Open::Exec(e) => return exec::start(e, session),
            Open::Ping => answer(&session, Ok(Control::Pong(info::pong(self.runs.name())))),
            Open::Ports => answer(
                &session,
                Ok(Control::Ports {
                    ports: info::listening_ports(),
                }),
            ),
            Open::Shutdown => shutdown(self.runs, &session),
            Open::Put(p) => worker(session, move |s| {
                answer(s, files::put(&p, s).map(Control::Done))
            }),
            Open::Get(g) => worker(session, move |s| {
                answer(s, files::get(&g, s).map(Control::Done))
            }),
            Open::Identity(id) => answer(&session, identity::apply(&id).map(Control::Done)),
        }
        // Only execs take control messages; the session's end reaches transfers as
        // an I/O error.
        Box::new(|_| true)
    }
}

/// Flush every filesystem and power off. The reply goes out first; the host then
/// watches the VMM exit.
fn shutdown(runs: Runs, session: &Session) {
    match runs {
        Runs::OnUnixSocket => answer(
            session,
            Err(ErrorReply::new(
                ErrorKind::Refused,
                "shutdown is disabled when the agent serves a unix socket (tests and debugging); nothing was powered off",
            )),
        ),
        Runs::AsInit => {
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
            let _ = session.send(&Control::Done(Done::default()));
            // The init's signal loop runs the orderly power-off (crate::pid1); it must
            // start even if the host already left.
            // SAFETY: kill(2) of our own process.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            session.close();
        }
        Runs::AsService => {
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
            // systemd unmounts /root and the overlay on the way down.
            let r = reap::spawn_detached(reap::command("systemctl").args(["poweroff", "--no-block"]))
                .or_else(|_| reap::spawn_detached(&mut reap::command("poweroff")));
            answer(
                session,
                r.map(|()| Control::Done(Done::default())).map_err(|e| {
                    ErrorReply::new(ErrorKind::Failed, format!("cannot start poweroff: {e}"))
                }),
            );
        }
    }
}
