//! Exec sessions: run a process on pipes or a pty, stream its stdio, forward signals
//! and resizes, report how it ended.
//!
//! One thread per session waits for events (control messages, the child's exit, the
//! host going away); pump threads move the bytes ([`pump`]). Every exec starts a new
//! session and process group, so a signal reaches the whole job, and a host that goes
//! away hangs the job up (SIGHUP, then SIGKILL after [`HANGUP_GRACE`]) like a closed
//! terminal.

mod pump;
mod spawn;

use crate::pty;
use banger_channel::sync::{ControlSink, Inbound, Session};
use banger_channel::{Control, ErrorReply, Exec, Stream, WinSize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// After the host went away, how long a hung-up job has before SIGKILL.
pub const HANGUP_GRACE: Duration = Duration::from_secs(3);

enum Event {
    Closed,
    Exited(libc::c_int),
}

/// What signals and resizes act on. They are applied on the connection's reader
/// thread as they arrive, so they keep their order with the stdin around them (a
/// resize then `stty size` on stdin sees the new size).
#[derive(Default)]
struct Target {
    /// The process (and its group); `None` before the start and once it was reaped.
    pid: Option<libc::pid_t>,
    /// The pty master, for a pty exec.
    master: Option<std::os::fd::OwnedFd>,
    /// A resize that came before the pty existed.
    pending: Option<WinSize>,
}

fn lock(t: &Mutex<Target>) -> std::sync::MutexGuard<'_, Target> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

impl Target {
    fn control(&mut self, c: Control) {
        match c {
            Control::Signal { signal } if (1..=64).contains(&signal) => {
                if let Some(pid) = self.pid {
                    // On a terminal the signal goes where a typed ctrl-c would.
                    let target = self
                        .master
                        .as_ref()
                        .and_then(pty::foreground)
                        .unwrap_or(pid);
                    signal_group(target, signal);
                }
            }
            Control::Resize(ws) => match &self.master {
                Some(m) => {
                    let _ = pty::resize(m, ws.rows, ws.cols);
                }
                None => self.pending = Some(ws),
            },
            _ => {}
        }
    }
}

/// Send an error and end the session.
pub fn fail(session: &Session, e: ErrorReply) {
    let _ = session.send(&Control::Error(e));
    session.close();
}

/// Start an exec session (the work runs on its own thread).
pub fn start(req: Exec, session: Session) -> ControlSink {
    let (tx, rx) = mpsc::channel::<Event>();
    let target = Arc::new(Mutex::new(Target::default()));
    let (exit_tx, t) = (tx.clone(), target.clone());
    let s = session.clone();
    let started = std::thread::Builder::new()
        .name("exec".into())
        .stack_size(256 << 10)
        .spawn(move || run(&req, &s, rx, exit_tx, t));
    if let Err(e) = started {
        fail(
            &session,
            ErrorReply::new(
                banger_channel::ErrorKind::Failed,
                format!("the agent cannot start a thread: {e}"),
            ),
        );
    }
    Box::new(move |m| {
        match m {
            Inbound::Control(c) => lock(&target).control(c),
            Inbound::Closed(_) => {
                let _ = tx.send(Event::Closed);
            }
        }
        true
    })
}

/// kill(2) a process group.
fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill with a negative pid signals that process group only.
        unsafe { libc::kill(-pgid, signal) };
    }
}

fn run(
    req: &Exec,
    session: &Session,
    rx: mpsc::Receiver<Event>,
    exit_tx: mpsc::Sender<Event>,
    target: Arc<Mutex<Target>>,
) {
    let plan = match spawn::plan(req) {
        Ok(p) => p,
        Err(e) => return fail(session, e),
    };
    let t = target.clone();
    let on_exit = Box::new(move |status| {
        lock(&t).pid = None;
        let _ = exit_tx.send(Event::Exited(status));
    });
    let child = match spawn::spawn(&plan, on_exit) {
        Ok(c) => c,
        Err(e) => return fail(session, e),
    };
    {
        let mut t = lock(&target);
        t.pid = Some(child.pid);
        if let Some(m) = child.master.as_ref().and_then(|m| m.try_clone().ok()) {
            if let Some(ws) = t.pending.take() {
                let _ = pty::resize(&m, ws.rows, ws.cols);
            }
            t.master = Some(m);
        }
    }
    let _ = session.send(&Control::Started {
        pid: Some(child.pid as u32),
    });
    let exited = Arc::new(pump::Exited::default());
    let mut pumps = Vec::new();
    pumps.extend(pump::output(
        child.stdout,
        session.clone(),
        Stream::Out,
        exited.clone(),
    ));
    match child.stderr {
        Some(fd) => pumps.extend(pump::output(
            fd,
            session.clone(),
            Stream::Err,
            exited.clone(),
        )),
        None => {
            let _ = session.eof(Stream::Err);
        }
    }
    pump::input(child.stdin, session.clone(), exited.clone());

    let mut hung_up = false;
    let status = loop {
        let ev = if hung_up {
            match rx.recv_timeout(HANGUP_GRACE) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    signal_group(child.pid, libc::SIGKILL);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        } else {
            match rx.recv() {
                Ok(ev) => ev,
                Err(_) => break None,
            }
        };
        match ev {
            Event::Exited(status) => break Some(status),
            Event::Closed => {
                if !hung_up {
                    hung_up = true;
                    signal_group(child.pid, libc::SIGHUP);
                    signal_group(child.pid, libc::SIGCONT);
                }
            }
        }
    };
    exited.set();
    for p in pumps {
        let _ = p.join();
    }
    lock(&target).master = None;
    if let (Some(status), false) = (status, hung_up) {
        let _ = session.send(&Control::Exit(crate::reap::exit_status(status)));
    }
    session.close();
}
