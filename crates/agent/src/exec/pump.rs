//! Threads that move bytes between a child's stdio and its session.
//!
//! Output pumps run until end of file. A background process that inherited the
//! child's stdout would keep that from ever coming, so once the child exited a pump
//! also stops when its pipe has been idle for [`IDLE_AFTER_EXIT`], or at the latest
//! [`LINGER_AFTER_EXIT`] after the exit; whatever the child itself wrote is in the
//! pipe before it exits, so nothing of its own output is lost.

use banger_channel::sync::Session;
use banger_channel::Stream;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An idle output after the child exited is considered finished after this.
pub const IDLE_AFTER_EXIT: Duration = Duration::from_millis(100);
/// Output is cut this long after the child exited, busy or not.
pub const LINGER_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How often a waiting pump looks at the clock.
const POLL_EVERY: Duration = Duration::from_millis(50);

const BUF: usize = 32 << 10;
const PUMP_STACK: usize = 128 << 10;

/// When the child exited (shared by its pumps).
#[derive(Debug, Default)]
pub struct Exited(Mutex<Option<Instant>>);

impl Exited {
    /// Record the exit now.
    pub fn set(&self) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(Instant::now);
    }

    /// Time since the exit, if it happened.
    pub fn since(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }
}

/// poll(2) one descriptor for `events`; `true` if it is ready (or in error).
fn ready(fd: &impl AsRawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    match std::thread::Builder::new()
        .name(name.into())
        .stack_size(PUMP_STACK)
        .spawn(f)
    {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("banger-agent: cannot start a {name} thread: {e}");
            None
        }
    }
}

/// Copy `fd` (a pipe or the pty master) to `stream` of `session`, then send its end.
pub fn output(
    fd: OwnedFd,
    session: Session,
    stream: Stream,
    exited: Arc<Exited>,
) -> Option<JoinHandle<()>> {
    spawn("exec-output", move || {
        let mut buf = vec![0u8; BUF];
        let mut f = File::from(fd);
        loop {
            if exited.since().is_some_and(|t| t >= LINGER_AFTER_EXIT) {
                break;
            }
            if !ready(&f, libc::POLLIN, POLL_EVERY) {
                if exited.since().is_some_and(|t| t >= IDLE_AFTER_EXIT) {
                    break;
                }
                continue;
            }
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if session.write_all(stream, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) => {}
                // EIO: the pty's terminal side is closed (the program and its
                // children are gone).
                Err(_) => break,
            }
        }
        let _ = session.eof(stream);
    })
}

/// Copy the session's input to `fd` (the child's stdin pipe, or the pty master) until
/// its end, then close `fd` (end of file for a pipe). After the child stopped reading,
/// input is read and dropped so the opener's writes never stall.
pub fn input(fd: OwnedFd, session: Session, exited: Arc<Exited>) {
    spawn("exec-input", move || {
        let mut buf = vec![0u8; BUF];
        let mut f = Some(File::from(fd));
        loop {
            let n = match session.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Some(w) = f.as_mut() else { continue };
            if write_all(w, &buf[..n], &exited).is_err() {
                f = None;
            }
        }
    });
}

/// Write all of `data`, giving up once the child exited and the descriptor stays full
/// (a pty nobody reads any more).
fn write_all(f: &mut File, mut data: &[u8], exited: &Exited) -> std::io::Result<()> {
    while !data.is_empty() {
        match f.write(data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if exited.since().is_some_and(|t| t >= IDLE_AFTER_EXIT) {
                    return Err(e);
                }
                ready(f, libc::POLLOUT, POLL_EVERY);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
