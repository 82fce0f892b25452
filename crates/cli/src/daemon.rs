//! Reaching bangerd: check the socket is ours, start the daemon when nobody answers,
//! and wait until it answers a ping.

use crate::errors::{fail, Class};
use anyhow::{bail, Context};
use banger_model::Layout;
use banger_rpc::{Client, ClientError, NoParams, Ping, PingResult};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_DAEMON") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

/// Refuse a socket that belongs to somebody else: talking to it would hand them our
/// requests (and the daemon would refuse us anyway).
fn check_owner(layout: &Layout) -> anyhow::Result<()> {
    let sock = layout.socket();
    if let Ok(md) = std::fs::symlink_metadata(&sock) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if md.uid() != me && !(me == 0 && system_owners_socket(layout, md.uid())) {
            return Err(fail(
                Class::Unauthorized,
                format!(
                    "the daemon socket {} belongs to uid {}, not to you (uid {me}); \
                     use your own state directory (BANGER_HOME or XDG_RUNTIME_DIR) or run banger as that user",
                    sock.display(),
                    md.uid()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether root may talk to a socket owned by `uid`: only the system install's own
/// daemon (`bangerd.service`, the layout `Layout::for_client` found) run for the owner
/// that root recorded in `/etc/banger/install.toml`. Any other user's socket could be
/// a daemon of theirs, which would get root's requests (and repositories).
fn system_owners_socket(layout: &Layout, uid: u32) -> bool {
    if *layout != Layout::system() {
        return false;
    }
    let l = banger_system::SystemLayout::default();
    match banger_system::InstallRecord::read(&l.install_record()) {
        Ok(Some(r)) => banger_system::Owner::lookup(&r.owner).is_ok_and(|o| o.uid == uid),
        _ => false,
    }
}

/// Connect to bangerd, starting it if needed.
pub async fn connect(layout: &Layout) -> anyhow::Result<Client> {
    check_owner(layout)?;
    match Client::connect(layout.socket()).await {
        Ok(c) => return Ok(c),
        Err(ClientError::Connect { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    start(layout).await?;
    Client::connect(layout.socket())
        .await
        .context("bangerd started but its socket does not accept connections")
}

async fn start(layout: &Layout) -> anyhow::Result<()> {
    std::fs::create_dir_all(&layout.state)
        .with_context(|| format!("creating {}", layout.state.display()))?;
    let log_path = layout.daemon_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening the daemon log {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let bin = daemon_binary();
    let child = std::process::Command::new(&bin)
        .arg("--detach")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the daemon {}", bin.display()))?;
    let start = Instant::now();
    let mut child = Some(child);
    let mut other: Option<String> = None;
    loop {
        if let Ok(mut c) = Client::connect(layout.socket()).await {
            if c.call::<Ping>(&NoParams {}, |_| {}).await.is_ok() {
                // Reap the child later without blocking: it keeps running detached.
                if let Some(mut child) = child.take() {
                    std::thread::spawn(move || child.wait());
                }
                return Ok(());
            }
        }
        let exited = match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status),
            _ => None,
        };
        if let Some(status) = exited {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let fresh = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            let reason = fresh
                .lines()
                .rev()
                .find(|l| l.starts_with("bangerd: error:"))
                .map(str::to_string)
                .unwrap_or_else(|| fresh.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
            // Another banger command started a daemon at the same moment and won the
            // state directory: wait for that one to answer instead.
            if reason.contains("already using") || reason.contains("already listening") {
                other = Some(reason);
                child = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            return Err(fail(
                Class::DaemonUnavailable,
                format!(
                    "bangerd exited ({status}) right after starting: {reason} (log: {})",
                    log_path.display()
                ),
            ));
        }
        if start.elapsed() > Duration::from_secs(15) {
            let message = match other {
                Some(reason) => format!(
                    "{reason}; that daemon did not answer on {} within 15 s either",
                    layout.socket().display()
                ),
                None => format!(
                    "bangerd did not answer within 15 s of starting; see its log {}",
                    log_path.display()
                ),
            };
            return Err(fail(Class::DaemonUnavailable, message));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ping a running daemon without starting one.
pub async fn ping_running(layout: &Layout) -> Option<PingResult> {
    check_owner(layout).ok()?;
    let mut c = Client::connect(layout.socket()).await.ok()?;
    c.call::<Ping>(&NoParams {}, |_| {}).await.ok()
}

/// Ask the daemon to exit (SIGTERM) and wait until its socket is gone.
pub async fn stop(layout: &Layout, pid: u32) -> anyhow::Result<()> {
    let p = libc::pid_t::try_from(pid).context("daemon pid out of range")?;
    // SAFETY: kill(2) with a positive pid.
    if unsafe { libc::kill(p, libc::SIGTERM) } != 0 {
        bail!(
            "could not signal bangerd (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let start = Instant::now();
    while layout.socket().exists() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "bangerd (pid {pid}) did not exit within 20 s; see its log {}",
                layout.daemon_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
