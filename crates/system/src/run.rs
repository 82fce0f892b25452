//! `banger system run --owner USER`: the system install's two services without
//! systemd, for containers, WSL, other init systems and CI. Runs in the foreground as
//! root under any supervisor: the root helper (`banger-helper`, as root) and, once it
//! answers, the owner daemon (`bangerd`, as USER: supplementary groups as `initgroups`
//! gives them, then gid, then uid, umask 077), each in its own process group so a
//! Ctrl-C at the terminal reaches only this supervisor. SIGINT or SIGTERM stops the
//! daemon, then the helper; guests keep running (QEMU runs in a session of its own,
//! jailed Firecracker runs in one the helper gave it). If either service exits on its
//! own, the other is stopped and `system run` fails, so the supervisor restarts both.
//!
//! The contract with the daemon: `BANGER_HELPER_SOCKET` names the helper's socket, and
//! `XDG_STATE_HOME`, `XDG_CACHE_HOME`, `XDG_RUNTIME_DIR` put its files where a system
//! install keeps them (see [`SystemLayout::daemon_env`]). Other `BANGER_*` variables of
//! this process pass through (`BANGER_LOG`, `BANGER_VMM`, ...).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_helper::{HelperClient, HelperConfig};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::install::{helper_config_for, write_helper_config};
use crate::{Owner, SystemError, SystemLayout};

/// How long a service may take to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long the helper may take to answer after starting.
const HELPER_READY: Duration = Duration::from_secs(15);

/// What `system run` starts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The user the daemon runs as.
    pub owner: Owner,
    /// Where things live.
    pub layout: SystemLayout,
    /// The helper program.
    pub helper_bin: PathBuf,
    /// The daemon program.
    pub daemon_bin: PathBuf,
}

impl RunOptions {
    /// The binaries beside the running `banger` (the installed ones when it is the
    /// installed `banger`, a build tree's otherwise), else the installed ones.
    /// `BANGER_DAEMON` overrides the daemon, as for the CLI.
    pub fn new(owner: Owner, layout: SystemLayout) -> RunOptions {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let pick = |name: &str| {
            let local = beside.join(name);
            if local.is_file() {
                local
            } else {
                layout.binary(name)
            }
        };
        let daemon_bin = std::env::var_os("BANGER_DAEMON")
            .map(PathBuf::from)
            .unwrap_or_else(|| pick("bangerd"));
        RunOptions {
            helper_bin: pick("banger-helper"),
            daemon_bin,
            owner,
            layout,
        }
    }
}

/// Why `system run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// SIGINT or SIGTERM: both services were stopped.
    Signalled,
    /// A service exited on its own (the other was stopped).
    Exited {
        /// "banger-helper" or "bangerd".
        which: &'static str,
        /// Its exit status.
        status: String,
    },
}

/// Create `dir` for the owner, 0700 (parents 0755, root's).
fn owner_dir(dir: &Path, owner: &Owner) -> Result<(), SystemError> {
    if let Some(parent) = dir.parent() {
        crate::files::create_dir_0755(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(crate::error::io("create", dir)(e))
        }
        _ => {}
    }
    let md = std::fs::symlink_metadata(dir).map_err(crate::error::io("inspect", dir))?;
    if !md.is_dir() {
        return Err(crate::error::io("use", dir)(std::io::Error::other(
            "it is not a directory (a symlink?)",
        )));
    }
    if md.uid() != owner.uid || md.gid() != owner.gid {
        std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))
            .map_err(crate::error::io("chown", dir))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(crate::error::io("set the mode of", dir))
}

/// The helper config `system run` uses: the installed one (which must serve this
/// owner), or a new one written for them.
fn helper_config(l: &SystemLayout, owner: &Owner) -> Result<HelperConfig, SystemError> {
    let path = l.helper_config();
    if path.exists() {
        let cfg = HelperConfig::load(&path).map_err(|e| SystemError::BadFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if cfg.owner_uid != owner.uid {
            return Err(SystemError::OtherOwner {
                path,
                configured: cfg.owner_uid,
                owner: owner.name.clone(),
                uid: owner.uid,
            });
        }
        return Ok(cfg);
    }
    let cfg = helper_config_for(l, owner);
    write_helper_config(l, &cfg)?;
    Ok(cfg)
}

/// Run both services until a signal or until one of them exits.
pub async fn run(o: &RunOptions) -> Result<RunEnd, SystemError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SystemError::NotRoot("banger system run"));
    }
    let l = &o.layout;
    let cfg = helper_config(l, &o.owner)?;
    for d in [l.state_dir(), l.cache_dir(), l.runtime_dir()] {
        owner_dir(&d, &o.owner)?;
    }
    let mut term =
        signal(SignalKind::terminate()).map_err(crate::error::io("watch", Path::new("SIGTERM")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(crate::error::io("watch", Path::new("SIGINT")))?;

    let mut helper = Command::new(&o.helper_bin)
        .arg("--config")
        .arg(l.helper_config())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| SystemError::Child {
            what: "banger-helper",
            reason: format!("cannot start {}: {e}", o.helper_bin.display()),
        })?;
    if let Err(e) = wait_helper(&cfg.socket, &mut helper).await {
        stop(&mut helper, "banger-helper").await;
        return Err(e);
    }
    eprintln!(
        "banger system run: banger-helper answers on {}",
        cfg.socket.display()
    );
    let mut daemon = match spawn_daemon(o) {
        Ok(c) => c,
        Err(e) => {
            stop(&mut helper, "banger-helper").await;
            return Err(e);
        }
    };
    eprintln!(
        "banger system run: bangerd starting as {} (uid {}), socket {}",
        o.owner.name,
        o.owner.uid,
        l.daemon_socket().display()
    );
    let end = tokio::select! {
        _ = term.recv() => RunEnd::Signalled,
        _ = int.recv() => RunEnd::Signalled,
        s = helper.wait() => RunEnd::Exited { which: "banger-helper", status: describe(s) },
        s = daemon.wait() => RunEnd::Exited { which: "bangerd", status: describe(s) },
    };
    eprintln!("banger system run: stopping (guests keep running)");
    stop(&mut daemon, "bangerd").await;
    stop(&mut helper, "banger-helper").await;
    Ok(end)
}

fn describe(s: std::io::Result<std::process::ExitStatus>) -> String {
    match s {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

async fn wait_helper(socket: &Path, helper: &mut Child) -> Result<(), SystemError> {
    let client = HelperClient::new(socket);
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = helper.try_wait() {
            return Err(SystemError::Child {
                what: "banger-helper",
                reason: format!("exited at start ({status}); its error is above"),
            });
        }
        match client.ping().await {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > HELPER_READY => {
                return Err(SystemError::HelperNotAnswering {
                    socket: socket.to_path_buf(),
                    reason: e.to_string(),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Start `bangerd` as the owner.
fn spawn_daemon(o: &RunOptions) -> Result<Child, SystemError> {
    let mut cmd = Command::new(&o.daemon_bin);
    cmd.env_clear()
        .env("HOME", &o.owner.home)
        .env("USER", &o.owner.name)
        .env("LOGNAME", &o.owner.name)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .current_dir("/")
        .process_group(0)
        .stdin(std::process::Stdio::null());
    for (k, v) in daemon_env(&o.layout, std::env::vars()) {
        cmd.env(k, v);
    }
    let groups: Vec<libc::gid_t> = o.owner.groups.clone();
    let (uid, gid) = (o.owner.uid, o.owner.gid);
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid,
    // setuid, umask) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(0o077);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| SystemError::Child {
        what: "bangerd",
        reason: format!(
            "cannot start {} as {}: {e}",
            o.daemon_bin.display(),
            o.owner.name
        ),
    })
}

/// The daemon's environment besides HOME, USER, LOGNAME and PATH: the layout's
/// (`SystemLayout::daemon_env`) and the caller's other `BANGER_*` variables. The
/// guest agent is the caller's `BANGER_AGENT` when set, else the installed one when
/// it exists, else none, so a daemon run from a build tree finds the agent beside its
/// own binary (`target/lib/banger/banger-agent`) as it would anywhere.
pub fn daemon_env(
    l: &SystemLayout,
    caller: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    const AGENT: &str = "BANGER_AGENT";
    const RESERVED: [&str; 3] = ["BANGER_HOME", "BANGER_SYSTEM_ROOT", "BANGER_DAEMON"];
    let ours = l.daemon_env();
    let mut out: Vec<(String, String)> = caller
        .filter(|(k, _)| {
            k.starts_with("BANGER_")
                && !RESERVED.contains(&k.as_str())
                && (k == AGENT || !ours.iter().any(|(o, _)| o == k))
        })
        .collect();
    let caller_agent = out.iter().any(|(k, v)| k == AGENT && !v.is_empty());
    for (k, v) in ours {
        if k == AGENT && (caller_agent || !Path::new(&v).is_file()) {
            continue;
        }
        out.push((k, v));
    }
    out
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; reap.
async fn stop(child: &mut Child, what: &str) {
    let Some(pid) = child.id() else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(s)) if s.signal().is_some() || s.success() => {}
        Ok(Ok(s)) => eprintln!("banger system run: {what} exited with {s}"),
        Ok(Err(_)) => {}
        Err(_) => {
            eprintln!("banger system run: {what} did not stop within {STOP_GRACE:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_gets_the_layout_and_the_callers_banger_variables() {
        let d = tempfile::tempdir().unwrap();
        let l = SystemLayout::under(d.path());
        let caller = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let env = daemon_env(
            &l,
            caller(&[
                ("BANGER_LOG", "debug"),
                ("BANGER_HOME", "/tmp/x"),
                ("XDG_STATE_HOME", "/home/me/.local/state"),
                ("BANGER_HELPER_SOCKET", "/tmp/evil.sock"),
            ]),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("BANGER_LOG").as_deref(), Some("debug"));
        assert_eq!(get("BANGER_HOME"), None);
        assert_eq!(
            get("BANGER_HELPER_SOCKET"),
            Some(l.helper_socket().display().to_string()),
            "the layout's helper, not the caller's"
        );
        assert_eq!(
            get("XDG_STATE_HOME"),
            Some(d.path().join("var/lib").display().to_string())
        );
        // No installed agent: none is named, the daemon finds its own.
        assert_eq!(get("BANGER_AGENT"), None);
        // An installed agent is named, unless the caller names one.
        std::fs::create_dir_all(l.agent().parent().unwrap()).unwrap();
        std::fs::write(l.agent(), b"agent").unwrap();
        let env = daemon_env(&l, caller(&[]));
        assert!(env.contains(&("BANGER_AGENT".into(), l.agent().display().to_string())));
        let env = daemon_env(&l, caller(&[("BANGER_AGENT", "/opt/agent")]));
        let agents: Vec<_> = env.iter().filter(|(k, _)| k == "BANGER_AGENT").collect();
        assert_eq!(
            agents,
            [&("BANGER_AGENT".to_string(), "/opt/agent".to_string())]
        );
    }
}
