//! Running the real `banger-helper` binary for a test (inside the test's network
//! namespace: it is spawned from the namespace's thread), and clients as other users
//! (this test binary re-executed under another uid).

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_helper::HelperConfig;

/// The configured owner in tests (no passwd entry needed).
pub const OWNER: u32 = 4242;
/// Another unprivileged user.
pub const STRANGER: u32 = 4343;

/// A running helper and its files.
pub struct Helper {
    pub dir: PathBuf,
    pub config: HelperConfig,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub child: Option<Child>,
}

/// A config for a helper living in `dir` (owner [`OWNER`]).
pub fn config_in(dir: &Path) -> HelperConfig {
    let mut c = HelperConfig::for_owner(OWNER, OWNER);
    c.socket = dir.join("run/helper.sock");
    c.runtime_dir = dir.join("run");
    c.owner_state_dir = dir.join("state");
    c.jail_root = dir.join("jail");
    c
}

/// A directory others can traverse (the owner's clients reach the socket in it).
pub fn public_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

impl Helper {
    /// Write `config` and start the helper with it; wait until it answers.
    pub fn start(dir: &Path, config: HelperConfig) -> Helper {
        let config_path = dir.join("helper.toml");
        std::fs::write(&config_path, config.to_toml()).unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let socket = config.socket.clone();
        let mut h = Helper {
            dir: dir.to_path_buf(),
            config,
            config_path,
            socket,
            child: None,
        };
        h.spawn();
        h
    }

    /// (Re)start the helper process.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("helper.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_banger-helper"))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("banger-helper exited ({status}):\n{}", self.log());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "helper never answered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The helper's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("helper.log")).unwrap_or_default()
    }

    /// SIGKILL the helper and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A client as root (this process).
    pub fn client(&self) -> banger_helper::HelperClient {
        banger_helper::HelperClient::new(&self.socket)
    }

    /// Send raw bytes on a fresh connection as root; returns every reply line and
    /// whether the helper closed the connection afterwards.
    pub fn raw(&self, bytes: &[u8]) -> (Vec<String>, bool) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The helper may close before reading everything we send.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let closed = s.read_to_string(&mut out).is_ok();
        (out.lines().map(str::to_string).collect(), closed)
    }

    /// Run [`client_entry`] in a child process as `uid` with `args`; returns its
    /// `RESULT` lines.
    pub fn as_user(&self, uid: u32, args: &[&str]) -> Vec<String> {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "client_entry", "--nocapture", "--test-threads=1"])
            .env("HELPER_TEST_CLIENT", args.join("\u{1f}"))
            .env("HELPER_TEST_SOCKET", &self.socket)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let results: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .map(str::to_string)
            .collect();
        assert!(
            !results.is_empty(),
            "client as uid {uid} printed no result: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        results
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

/// `ip -j link show` names, sorted: what the host has.
pub fn links() -> Vec<String> {
    let out = banger_testns::sh(&["ip", "-j", "link", "show"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Packets the kernel received on `link` (what a VMM wrote into its tap).
pub fn rx_packets(link: &str) -> u64 {
    let out = banger_testns::sh(&["ip", "-s", "-j", "link", "show", "dev", link]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// Lines from a child's stdout, for debugging.
pub fn lines(r: impl Read) -> Vec<String> {
    std::io::BufReader::new(r)
        .lines()
        .map_while(Result::ok)
        .collect()
}
