//! Process checks that survive pid reuse: a pid is "ours" only if its command line
//! still names the VM id we tagged it with.

use std::time::{Duration, Instant};

/// Whether `pid` is alive and its command line contains `tag`.
pub fn alive_with_tag(pid: u32, tag: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            text.contains(tag) && !is_zombie(pid)
        }
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Send `sig` to `pid` (ESRCH is fine: already gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a positive pid has no memory-safety preconditions.
    unsafe { libc::kill(p, sig) };
}

/// Wait until `pid` no longer runs with `tag`, up to `timeout`. True if it exited.
pub async fn wait_exit(pid: u32, tag: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while alive_with_tag(pid, tag) {
        if t.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sees_and_kills_a_tagged_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        // The child runs our test binary until it has exec'd sleep.
        let t = Instant::now();
        while !alive_with_tag(pid, "sleep") && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(alive_with_tag(pid, "sleep"));
        assert!(!alive_with_tag(pid, "not-the-tag"));
        signal(pid, libc::SIGKILL);
        let _ = child.wait();
        assert!(wait_exit(pid, "sleep", Duration::from_secs(2)).await);
    }
}
