//! The `rootless` section's plumbing: why it would be skipped, "the internet" (a
//! second namespace with a web and a DNS server), and looks at `/proc` and the
//! daemon's log.

use super::super::{net_section, run_ok, stderr, stdout, Env, Upstream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The internet's web server port (198.18.7.1).
pub(super) const WEB_PORT: u16 = 8097;
/// The page it serves, and its body.
pub(super) const PAGE: &str = "page.txt";
pub(super) const PAGE_BODY: &str = "hello from the internet\n";

/// Why the section cannot run here, if it cannot.
pub(super) fn skip_reason() -> Option<String> {
    if !on_path("passt") {
        return Some("passt is not installed (Debian: apt-get install passt)".into());
    }
    if !on_path("newuidmap") {
        return Some(
            "newuidmap is not installed (Debian: apt-get install uidmap): unprivileged image \
             builds need it"
                .into(),
        );
    }
    let system = banger_helper::config::DEFAULT_SOCKET;
    if Path::new(system).exists() {
        return Some(format!(
            "a system banger-helper listens on {system}: a user's daemon would use it rather \
             than run rootless"
        ));
    }
    // An unprivileged process maps itself into a user namespace of its own.
    let userns = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ])
        .output();
    match userns {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unprivileged user namespaces are unavailable (unshare --user as nobody: {})",
            stderr(&o).trim()
        )),
        Err(e) => Some(format!("cannot check for user namespaces (setpriv: {e})")),
    }
}

pub(super) fn on_path(cmd: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .any(|d| Path::new(d).join(cmd).is_file());
    found
}

/// "The internet": the upstream namespace with a web server and a DNS server, the
/// default route through it, and the namespace's resolv.conf naming it. Torn down on
/// drop (servers first, then `/etc/netns/<ns>`, then the namespace).
pub(super) struct Internet {
    servers: Vec<Child>,
    etc: PathBuf,
    /// The web server's log (client addresses).
    pub web_log: PathBuf,
    /// The names the DNS server was asked.
    pub dns_log: PathBuf,
    upstream: Option<Upstream>,
}

impl Drop for Internet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_file(self.etc.join("resolv.conf"));
        let _ = std::fs::remove_dir(&self.etc);
        if let Some(parent) = self.etc.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        self.upstream.take();
    }
}

impl Internet {
    pub fn new(env: &Env) -> Internet {
        let upstream = Upstream::new(env, "rl", 7);
        let up = upstream.netns.clone();
        let dir = env.home.path().join("internet");
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www").join(PAGE), PAGE_BODY).unwrap();
        let etc = PathBuf::from("/etc/netns").join(&env.netns);
        let mut me = Internet {
            servers: vec![],
            etc: etc.clone(),
            web_log: dir.join("web.log"),
            dns_log: dir.join("dns.log"),
            upstream: Some(upstream),
        };
        run_ok(Command::new("ip").args([
            "-n",
            &env.netns,
            "route",
            "add",
            "default",
            "via",
            "198.18.7.1",
        ]));
        // passt reads it (through `ip netns exec`'s bind mount) and forwards guests'
        // DNS queries there.
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), "nameserver 198.18.7.1\n").unwrap();
        let web_log = std::fs::File::create(&me.web_log).unwrap();
        me.servers.push(
            Command::new("ip")
                .args(["netns", "exec", &up, "python3", "-m", "http.server"])
                .arg(WEB_PORT.to_string())
                .args(["--bind", "198.18.7.1", "--directory"])
                .arg(dir.join("www"))
                .stdout(std::process::Stdio::null())
                .stderr(web_log)
                .spawn()
                .unwrap(),
        );
        me.servers.push(
            Command::new("ip")
                .args(["netns", "exec", &up, "python3", "-c"])
                .arg(net_section::FAKE_UPSTREAM)
                .arg("198.18.7.1")
                .arg(&me.dns_log)
                .spawn()
                .unwrap(),
        );
        // Reachable from the test's namespace through the route.
        let url = format!("http://198.18.7.1:{WEB_PORT}/{PAGE}");
        let t = Instant::now();
        loop {
            let out = in_ns(env, &["curl", "-sf", "-m", "2", &url]);
            if stdout(&out) == PAGE_BODY {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the internet's web server never answered: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        me
    }
}

/// `ip netns exec <test ns> ARGS` as root (not banger).
pub(super) fn in_ns(env: &Env, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &env.netns])
        .args(args)
        .output()
        .unwrap()
}

/// The last lines of the daemon's log, for failure messages.
pub(super) fn daemon_log(env: &Env) -> String {
    let text = std::fs::read_to_string(env.state().join("bangerd.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- bangerd.log (last 40 lines) ---\n{}",
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

/// `banger ARGS` in the namespace, which must succeed; its stdout.
pub(super) fn ok(env: &Env, args: &[&str]) -> String {
    let out = env.banger(args);
    assert!(
        out.status.success(),
        "banger {}: {}\n{}",
        args.join(" "),
        stderr(&out),
        daemon_log(env)
    );
    stdout(&out)
}

/// Processes whose real uid is `uid`: `pid comm cmdline` each.
pub(super) fn procs_of(uid: u32) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if real != Some(uid) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        out.push(format!("{pid} {} {}", comm.trim(), cmd.trim()));
    }
    out
}

/// The user's passt processes.
pub(super) fn passts(uid: u32) -> Vec<String> {
    procs_of(uid)
        .into_iter()
        .filter(|p| {
            p.split_whitespace()
                .nth(1)
                .is_some_and(|c| c.starts_with("passt"))
        })
        .collect()
}
