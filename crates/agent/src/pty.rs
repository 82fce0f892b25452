//! Pseudo-terminals for interactive execs, with ioctls only (no libutil: the agent is
//! static). The slave is opened from the master with `TIOCGPTPEER`, so no `/dev/pts`
//! path is looked up (a guest path could be anything).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A master and its slave.
pub struct Pty {
    /// The agent's end: what the program writes is read here; writes are its input.
    pub master: OwnedFd,
    /// The program's terminal (stdin, stdout and stderr of the child).
    pub slave: OwnedFd,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

/// Open a new pty of `rows` x `cols`.
pub fn open(rows: u16, cols: u16) -> io::Result<Pty> {
    // SAFETY: open(2) of a constant path; the result is checked.
    let m = check(
        unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        },
        "open /dev/ptmx (is devpts mounted on /dev/pts?)",
    )?;
    // SAFETY: m is a fresh descriptor nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int.
    check(
        unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) },
        "unlock the pty",
    )?;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let s = unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    let s = check(s, "open the pty's terminal (TIOCGPTPEER)")?;
    // SAFETY: s is a fresh descriptor nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    resize(&master, rows, cols)?;
    Ok(Pty { master, slave })
}

/// Make the master non-blocking, so a write to a terminal nobody reads any more
/// never hangs the agent's input thread (reads are preceded by poll anyway).
pub fn set_nonblocking(master: &OwnedFd) -> io::Result<()> {
    let fd = master.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let flags = check(
        unsafe { libc::fcntl(fd, libc::F_GETFL) },
        "get the pty's flags",
    )?;
    // SAFETY: as above.
    check(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
        "make the pty non-blocking",
    )
    .map(drop)
}

/// Set the terminal's size; the kernel sends SIGWINCH to its foreground process group.
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ takes a pointer to a winsize.
    check(
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        "set the terminal size",
    )
    .map(drop)
}

/// The terminal's foreground process group (where a typed ctrl-c would go).
pub fn foreground(master: &OwnedFd) -> Option<libc::pid_t> {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes a pid_t.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) };
    (rc == 0 && pgrp > 0).then_some(pgrp)
}

/// In the forked child (async-signal-safe): a new session whose controlling terminal
/// is stdin (the pty's slave).
pub fn make_controlling() -> io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_has_the_size_it_was_given() {
        let p = match open(33, 99) {
            Ok(p) => p,
            Err(e) => {
                println!("skipping: no pty here: {e}");
                return;
            }
        };
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize.
        let rc = unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 99));
        resize(&p.master, 10, 20).unwrap();
        // SAFETY: as above.
        unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_row, ws.ws_col), (10, 20));
    }
}
