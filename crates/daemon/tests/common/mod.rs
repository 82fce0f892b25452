//! The real `bangerd` binary as a child process, and raw RPC lines to it: the
//! daemon-level fault tests talk to exactly what users run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bangerd`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// `bangerd` with only `envs` (and PATH) set, its stderr in `log`.
pub fn command(envs: &[(&str, &Path)], log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bangerd"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        )
        .env("BANGER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

impl Daemon {
    /// Start `bangerd` and wait until it answers a ping on `socket`.
    pub fn start(envs: &[(&str, &Path)], socket: PathBuf, log: PathBuf) -> Daemon {
        let child = command(envs, &log).spawn().unwrap();
        let d = Daemon { child, socket, log };
        let t = Instant::now();
        while !ping(&d.socket) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "bangerd did not answer within 30 s; its log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// The daemon's open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one raw line (bytes as given, then a newline) and read one reply line.
pub fn call_raw(socket: &Path, line: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(line)?;
    s.write_all(b"\n")?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply)
}

/// Whether the daemon on `socket` answers a ping.
pub fn ping(socket: &Path) -> bool {
    call_raw(socket, br#"{"v":1,"id":7,"method":"ping"}"#)
        .map(|r| r.contains("\"result\"") && r.contains("\"id\":7"))
        .unwrap_or(false)
}
