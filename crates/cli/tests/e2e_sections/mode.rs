//! Who runs what in the e2e suite (issue 11): the default mode, `privsep`, runs the
//! CLI and the daemon it starts as an unprivileged owner the test creates, with a
//! root `banger-helper` for the test's bridge and subnet inside the test's network
//! namespace; `BANGER_E2E_MODE=root` runs everything as root in-process, the old way.
//!
//! - [`Owner`]: the user (`useradd`, with subordinate ids for unprivileged image
//!   builds), the helper's root-owned config, and the helper itself. The test's
//!   `BANGER_HOME` is the owner's (0700); the CLI runs as
//!   `runuser -u OWNER -- banger ...` with `BANGER_HELPER_SOCKET` set, so the daemon it
//!   starts is the owner's and uses the helper.
//! - [`Watch`]: samples `/proc` while a section runs and once after it: every
//!   `bangerd` and every VMM of the test runs as the owner (real, effective, saved and
//!   filesystem uids), the test's `banger` CLI too, and nothing the daemon starts runs
//!   as root. Root is allowed to `banger-helper` only (and to Debian's setuid
//!   `newuidmap`/`newgidmap`, which an unprivileged image build calls to map its user
//!   namespace; they run for milliseconds and run nothing).
//! - [`root_smoke`]: one section that always runs in-process as root, with its own
//!   namespace and `BANGER_HOME`, so `make test` keeps testing that mode.

use super::{log, run_ok, stderr, stdout, Env};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The e2e's mode, from `BANGER_E2E_MODE` (`privsep`, the default, or `root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The helper as root, the CLI and daemon as an owner the test creates.
    Privsep,
    /// Everything as root, privileged operations in-process.
    Root,
    /// The CLI and daemon as an owner the test creates, with no helper at all (the
    /// `rootless` section's own environment; not a `BANGER_E2E_MODE`).
    Rootless,
}

impl Mode {
    pub fn from_env() -> Mode {
        match std::env::var("BANGER_E2E_MODE").as_deref() {
            Ok("root") => Mode::Root,
            Ok("privsep") | Ok("") | Err(_) => Mode::Privsep,
            Ok(other) => panic!("BANGER_E2E_MODE={other}: use privsep (the default) or root"),
        }
    }
}

/// The test's owner and its root helper (none for a rootless owner); the user is
/// removed on drop.
pub struct Owner {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Root's: the helper's config (etc/), socket and record (run/), the owner's
    /// home (home/), the helper's log.
    dir: tempfile::TempDir,
    helper: Option<Child>,
}

impl Owner {
    /// Create the user, give it `home` (the test's BANGER_HOME) and start the helper
    /// in `netns`.
    pub fn create(netns: &str, home: &Path) -> Owner {
        let mut owner = Owner::user("bgrown", home);
        owner.start_helper(netns, home);
        owner
    }

    /// Create the user `<prefix><pid>` (subordinate ids included) and give it `home`;
    /// no helper (a rootless owner).
    pub fn user(prefix: &str, home: &Path) -> Owner {
        let user = format!("{prefix}{}", std::process::id() % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("banger-e2e-owner-")
            .tempdir_in("/var/tmp")
            .unwrap();
        // The owner walks through it to the helper's socket and its own home; the
        // helper's config inside stays root's and not writable by others.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = Command::new("userdel").args(["-r", &user]).output();
        run_ok(
            Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", "-d"])
                .arg(dir.path().join("home"))
                .arg(&user),
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &user]).output().unwrap();
            stdout(&out).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        assert!(
            subuid.lines().any(|l| l.starts_with(&format!("{user}:"))),
            "useradd gave {user} no subordinate ids (/etc/subuid); unprivileged image builds need them"
        );
        run_ok(Command::new("chown").arg(format!("{uid}:{gid}")).arg(home));
        Owner {
            user,
            uid,
            gid,
            dir,
            helper: None,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The owner's home directory.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The helper's socket (`BANGER_HELPER_SOCKET` for the owner's daemon), when the
    /// owner has a helper.
    pub fn socket(&self) -> Option<PathBuf> {
        self.helper.as_ref().map(|_| self.helper_socket())
    }

    /// Point `c` at the helper (`BANGER_HELPER_SOCKET`), or make sure it names none
    /// (a rootless owner).
    pub fn helper_env(&self, c: &mut Command) {
        match self.socket() {
            Some(sock) => c.env("BANGER_HELPER_SOCKET", sock),
            None => c.env_remove("BANGER_HELPER_SOCKET"),
        };
    }

    fn helper_socket(&self) -> PathBuf {
        self.path("run/helper.sock")
    }

    /// Write the helper's config (the test's bridge and subnet, the defaults of every
    /// e2e run) and start `banger-helper` in `netns`, waiting until it listens.
    fn start_helper(&mut self, netns: &str, home: &Path) {
        let etc = self.path("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = etc.join("helper.toml");
        std::fs::write(
            &config,
            format!(
                "owner_uid = {}\nowner_gid = {}\nbridge = \"banger0\"\nsubnet = \"172.30.0.0/24\"\n\
                 socket = \"{}\"\nruntime_dir = \"{}\"\nowner_state_dir = \"{}\"\n\
                 jail_root = \"{}\"\nnft = \"/usr/sbin/nft\"\n",
                self.uid,
                self.gid,
                self.helper_socket().display(),
                self.path("run").display(),
                home.join("state").display(),
                self.path("jail").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = std::fs::File::create(self.path("helper.log")).unwrap();
        let helper = super::banger_bin().with_file_name("banger-helper");
        assert!(
            helper.exists(),
            "{} missing: run `cargo build --workspace` first (make test does)",
            helper.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(helper)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.helper = Some(child);
        let t = Instant::now();
        while !self.helper_socket().exists() {
            if let Some(Ok(Some(s))) = self.helper.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "banger-helper exited at start ({s}): {}",
                    std::fs::read_to_string(self.path("helper.log")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "banger-helper did not listen on {} within 30 s",
                self.helper_socket().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "e2e mode privsep: owner {} (uid {}), banger-helper (pid {}) on {}, log {}",
            self.user,
            self.uid,
            self.helper_pid(),
            self.helper_socket().display(),
            self.path("helper.log").display()
        );
    }

    pub fn helper_pid(&self) -> u32 {
        self.helper.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The tail of the helper's log (for failure messages).
    pub fn helper_log(&self) -> String {
        let text = std::fs::read_to_string(self.path("helper.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(mut c) = self.helper.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("pkill")
            .args(["-9", "-U", &self.uid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("userdel").args(["-r", &self.user]).status();
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    /// Real, effective, saved and filesystem uids.
    uids: [u32; 4],
    /// The executable's file name (from `/proc/PID/exe`, else argv[0]).
    exe: String,
    cmd: String,
    /// Whether it runs with the test's BANGER_HOME (the CLI, the daemon it starts,
    /// and what that starts).
    ours: bool,
}

fn read_procs(home: &str) -> Vec<Proc> {
    let marker = format!("BANGER_HOME={home}");
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let p = e.path();
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        let field = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let u = field("Uid:");
        if u.len() < 4 {
            continue;
        }
        let ppid = field("PPid:").first().copied().unwrap_or(0);
        let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let environ = std::fs::read(p.join("environ")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
        let exe = std::fs::read_link(p.join("exe"))
            .ok()
            .and_then(|l| {
                l.file_name().map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(" (deleted)")
                        .to_string()
                })
            })
            .unwrap_or_else(|| {
                cmd.split_whitespace()
                    .next()
                    .and_then(|a| Path::new(a).file_name())
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            });
        out.push(Proc {
            pid,
            ppid,
            uids: [u[0], u[1], u[2], u[3]],
            exe,
            cmd,
            ours,
        });
    }
    out
}

/// What looking at `/proc` found: violations, and the (kind, pid) pairs checked.
type Findings = (Vec<String>, BTreeSet<(String, u32)>);

fn scan(home: &str, owner_uid: u32, helper_pid: u32) -> Findings {
    let procs = read_procs(home);
    let by_pid: HashMap<u32, &Proc> = procs.iter().map(|p| (p.pid, p)).collect();
    let is_daemon = |p: &Proc| p.ours && p.exe == "bangerd";
    // Whether a bangerd of the test is among `p`'s ancestors.
    let under_daemon = |p: &Proc| {
        let mut cur = p.ppid;
        for _ in 0..64 {
            match by_pid.get(&cur) {
                Some(a) if is_daemon(a) => return true,
                Some(a) if a.ppid != cur => cur = a.ppid,
                _ => return false,
            }
        }
        false
    };
    let mut bad = vec![];
    let mut seen = BTreeSet::new();
    for p in &procs {
        // passt (rootless guest networking; Debian's wrapper execs `passt.avx2`).
        let kind = if p.exe == "bangerd"
            || p.exe.starts_with("qemu-system")
            || p.exe == "firecracker"
            || p.exe == "passt"
            || p.exe.starts_with("passt.")
        {
            Some(p.exe.clone())
        } else if p.exe == "banger" {
            Some("banger".to_string())
        } else {
            None
        };
        let root = p.uids.contains(&0);
        // A VMM is the test's when it runs with its home or on its files (another
        // home's CLI may name the test's files, so the CLI and daemon go by the first).
        let vmm = kind
            .as_deref()
            .is_some_and(|k| k != "banger" && k != "bangerd");
        let ours = p.ours || (vmm && p.cmd.contains(&format!("{home}/")));
        if let Some(kind) = kind.filter(|_| ours) {
            seen.insert((kind.clone(), p.pid));
            if p.uids.iter().any(|u| *u != owner_uid) {
                bad.push(format!(
                    "{kind} pid {} runs as uids {:?}, not the owner's {owner_uid}: {}",
                    p.pid, p.uids, p.cmd
                ));
            }
        } else if p.exe == "banger-helper" && p.pid == helper_pid {
            seen.insert(("banger-helper (root)".into(), p.pid));
            if p.uids[1] != 0 {
                bad.push(format!("the helper runs as {:?}, not root", p.uids));
            }
        } else if root && under_daemon(p) && !matches!(p.exe.as_str(), "newuidmap" | "newgidmap") {
            bad.push(format!(
                "pid {} ({}) started by the owner's bangerd runs as root ({:?}): {}",
                p.pid, p.exe, p.uids, p.cmd
            ));
        }
    }
    (bad, seen)
}

/// Samples `/proc` every second while a section runs (privsep mode only).
pub struct Watch<'a> {
    owner: &'a Owner,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Findings>>,
    home: String,
    owner_uid: u32,
    helper_pid: u32,
}

impl<'a> Watch<'a> {
    pub fn start(env: &'a Env) -> Option<Watch<'a>> {
        let owner = env.owner.as_ref()?;
        let home = env.home.path().display().to_string();
        let (owner_uid, helper_pid) = (owner.uid, owner.helper_pid());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let h = home.clone();
        let thread = std::thread::spawn(move || {
            let mut bad: Vec<String> = vec![];
            let mut seen = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                let (b, s) = scan(&h, owner_uid, helper_pid);
                for v in b {
                    if !bad.contains(&v) && bad.len() < 20 {
                        bad.push(v);
                    }
                }
                seen.extend(s);
                std::thread::sleep(Duration::from_secs(1));
            }
            (bad, seen)
        });
        Some(Watch {
            owner,
            stop,
            thread: Some(thread),
            home,
            owner_uid,
            helper_pid,
        })
    }

    /// Stop sampling, look once more, and fail the section on any violation.
    pub fn finish(mut self, section: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut bad, mut seen) = self.thread.take().unwrap().join().unwrap();
        let (b, s) = scan(&self.home, self.owner_uid, self.helper_pid);
        bad.extend(b);
        seen.extend(s);
        assert!(
            bad.is_empty(),
            "section {section}: processes of banger run as root or as another user:\n{}",
            bad.join("\n")
        );
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for (kind, _) in seen.iter().filter(|(k, _)| !k.starts_with("banger-helper")) {
            *count.entry(kind.clone()).or_default() += 1;
        }
        // A rootless owner has no helper (and nothing of the test may be root).
        let rootless = self.helper_pid == 0;
        assert!(
            rootless || seen.iter().any(|(k, _)| k.starts_with("banger-helper")),
            "section {section}: the helper (pid {}) is gone; its log:\n{}",
            self.helper_pid,
            self.owner.helper_log()
        );
        let owners = if count.is_empty() {
            "none of the test's".to_string()
        } else {
            count
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let root = if rootless {
            "no helper, nothing of banger's root".to_string()
        } else {
            format!("banger-helper (pid {}) the only root", self.helper_pid)
        };
        eprintln!(
            "=== e2e section {section}: uids checked: {owners} as the owner (uid {}); {root}",
            self.owner_uid
        );
    }
}

/// The root in-process smoke: its own namespace and BANGER_HOME, the default image
/// copied in as root (kernel import, `image register` of its ext4, read by an export
/// guest), a VM that runs a command, a daemon that is root and says it works
/// in-process.
pub fn root_smoke(env: &Env) {
    if env.owner.is_none() {
        eprintln!("root_smoke: BANGER_E2E_MODE=root runs every section in-process as root already");
        return;
    }
    let root = Env::new_in(Mode::Root, "rs");
    let img = env.default_image_dir();
    let k = root.banger_host(&[
        "kernel",
        "import",
        img.join("vmlinuz").to_str().unwrap(),
        "--initrd",
        img.join("initrd.img").to_str().unwrap(),
        "--name",
        "smoke-k",
    ]);
    assert!(k.status.success(), "{}", stderr(&k));
    let r = root.banger_host(&[
        "image",
        "register",
        "smoke",
        "--rootfs",
        img.join("rootfs.ext4").to_str().unwrap(),
        "--kernel",
        "smoke-k",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(root.banger_host(&["daemon", "stop"]).status.success());
    let out = root.banger(&[
        "vm",
        "run",
        "--image",
        "smoke",
        "--",
        "sh",
        "-c",
        "echo root-smoke; exit 4",
    ]);
    assert_eq!(stdout(&out), "root-smoke\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4));
    let pid = root.daemon_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "the smoke's daemon is root"
    );
    let daemon_log = std::fs::read_to_string(root.state().join("bangerd.log")).unwrap_or_default();
    assert!(
        daemon_log.contains("in-process"),
        "the root daemon does privileged work in-process: {daemon_log}"
    );
    root.assert_nothing_left();
    let status = root.banger(&["daemon", "status"]);
    log(&["daemon", "status"], &status);
}
