//! Child processes: one place that waits for them all.
//!
//! As PID 1 (and as a child subreaper when serving under systemd) the agent inherits
//! every orphan in the guest, so it must `waitpid(-1)`; but an exec session also needs
//! the exit status of its own child. So nobody else waits: [`spawn`] registers the
//! child's pid with a callback while holding the table's lock, and [`reap_all`] (run
//! on every SIGCHLD) hands each status to its callback, or drops it for an orphan. The
//! reaper takes the same lock around `waitpid`, so registration is atomic with the
//! fork (a child that exits at once is never reaped before its callback is in the
//! table), and std's own wait for a child whose exec failed is never raced.
//!
//! SIGCHLD is blocked in every thread (see [`block`]) and taken with `sigtimedwait`, so
//! no signal handler runs in a multi-threaded process. Children get an empty signal
//! mask back before exec ([`reset_child_signals`]): Rust's `Command` does not reset it.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// What happens when a registered child ends (called with its raw wait status).
pub type OnExit = Box<dyn FnOnce(libc::c_int) + Send>;

fn table() -> MutexGuard<'static, HashMap<libc::pid_t, OnExit>> {
    static T: OnceLock<Mutex<HashMap<libc::pid_t, OnExit>>> = OnceLock::new();
    T.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A signal set of `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the signal numbers are valid constants.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    set
}

/// Block `signals` in the calling thread and every thread it starts afterwards. Call
/// it first thing in `main`, before any thread exists.
pub fn block(signals: &[libc::c_int]) {
    let set = sigset(signals);
    // SAFETY: set is initialised; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Wait up to `timeout` for one of `set`; returns the signal, or `None` on timeout.
pub fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: set and ts are valid; siginfo is not wanted.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// In a forked child before exec: unblock every signal and give every signal its
/// default action back. Ignored dispositions survive exec: Rust ignores SIGPIPE in the
/// agent, and an agent started from a background job inherits an ignored SIGINT and
/// SIGQUIT, which would make ctrl-c do nothing in the command. Async-signal-safe.
pub fn reset_child_signals() -> io::Result<()> {
    // SAFETY: only async-signal-safe calls on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

/// A `Command` whose child starts with default signal handling (for helpers such as
/// `systemctl poweroff`; exec sessions add their own `pre_exec` steps after this).
pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    // SAFETY: reset_child_signals is async-signal-safe.
    unsafe { c.pre_exec(reset_child_signals) };
    c
}

/// Start `cmd`; `on_exit` runs (on the reaping thread) with its wait status.
pub fn spawn(cmd: &mut Command, on_exit: OnExit) -> io::Result<Child> {
    let mut t = table();
    let child = cmd.spawn()?;
    t.insert(child.id() as libc::pid_t, on_exit);
    Ok(child)
}

/// Start `cmd` and forget it (its status is reaped and dropped).
pub fn spawn_detached(cmd: &mut Command) -> io::Result<()> {
    spawn(cmd, Box::new(|_| {})).map(drop)
}

/// Reap every child that has ended; returns how many. The table's lock is held around
/// each `waitpid`, so a [`spawn`] in progress (which holds it across the fork and, when
/// the exec fails, std's own wait for the child) is never raced.
pub fn reap_all() -> usize {
    let mut n = 0;
    loop {
        let mut status = 0;
        let cb = {
            let mut t = table();
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return n;
            }
            t.remove(&pid)
        };
        n += 1;
        if let Some(cb) = cb {
            cb(status);
        }
    }
}

/// Whether the agent has no child left at all.
pub fn no_children() -> bool {
    // SAFETY: waitid with WNOHANG|WNOWAIT only peeks; a zeroed siginfo is valid.
    let rc = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// Serve mode (not PID 1): become the subreaper of our descendants and reap on a
/// thread. SIGCHLD must already be blocked ([`block`]).
pub fn start_thread() {
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let started = std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 << 10)
        .spawn(|| {
            let set = sigset(&[libc::SIGCHLD]);
            loop {
                // The timeout covers a SIGCHLD that merged with an earlier one.
                wait_signal(&set, Duration::from_secs(1));
                reap_all();
            }
        });
    if let Err(e) = started {
        eprintln!("banger-agent: cannot start the reaper thread: {e}; exec sessions will not see their exit");
    }
}

/// A wait status as the channel's exit status.
pub fn exit_status(status: libc::c_int) -> banger_channel::ExitStatus {
    if libc::WIFEXITED(status) {
        banger_channel::ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
            core_dumped: false,
        }
    } else {
        banger_channel::ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
            core_dumped: libc::WCOREDUMP(status),
        }
    }
}
