//! Process checks that survive pid reuse.
//!
//! A pid is "ours" only if all of these hold: it is above 1 (0 would address our
//! own process group and 1 is init), it is not a zombie, its command line still
//! contains the tag we launched it with (the VM's control socket path, never
//! empty), and, when we recorded it, its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot) is the one we saw at launch. The
//! start time is what tells a reused pid apart: a new process with the same pid
//! and a copied command line cannot have started at the same tick.

use std::time::{Duration, Instant};

/// Who a launched process is: pid, the tag its command line contains, and its
/// start time when it was recorded (handles written by older bangers have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The process id.
    pub pid: u32,
    /// A string its command line contains (the control socket path).
    pub tag: &'a str,
    /// Its start time in clock ticks since boot, if recorded.
    pub start_time: Option<u64>,
}

impl Identity<'_> {
    /// Whether this exact process is alive (see the module docs).
    pub fn alive(&self) -> bool {
        if self.pid <= 1 || self.tag.is_empty() {
            return false;
        }
        let Some(stat) = read_stat(self.pid) else {
            return false;
        };
        if stat.zombie {
            return false;
        }
        if self.start_time.is_some_and(|t| t != stat.start_time) {
            return false;
        }
        match std::fs::read(format!("/proc/{}/cmdline", self.pid)) {
            Ok(raw) => String::from_utf8_lossy(&raw).contains(self.tag),
            Err(_) => false,
        }
    }

    /// Wait until this process is gone, up to `timeout`. True if it exited.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while self.alive() {
            if t.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Send `sig` if this process is alive (checked right before sending).
    pub fn signal(&self, sig: libc::c_int) {
        if self.alive() {
            signal(self.pid, sig);
        }
    }
}

/// Whether `pid` is alive and its command line contains `tag` (no start-time
/// check). Refuses pid 0 and 1 and an empty tag, which would match anything.
pub fn alive_with_tag(pid: u32, tag: &str) -> bool {
    Identity {
        pid,
        tag,
        start_time: None,
    }
    .alive()
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22),
/// or `None` if it is gone or unreadable.
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    read_stat(pid).map(|s| s.start_time)
}

struct Stat {
    zombie: bool,
    start_time: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// contain spaces and parentheses itself, so fields are counted after the last `)`.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // After the name: field 3 is the state, field 22 the start time.
    let state = fields.next()?;
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat {
        zombie: state.starts_with('Z'),
        start_time,
    })
}

/// Send `sig` to `pid` (ESRCH is fine: already gone). Pid 0 (our own process
/// group) and 1 (init) are never signalled.
pub fn signal(pid: u32, sig: libc::c_int) {
    if pid <= 1 {
        return;
    }
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a positive pid has no memory-safety preconditions.
    unsafe { libc::kill(p, sig) };
}

/// Live processes whose command line contains `tag`, each with its start time (so
/// a signal sent later cannot reach a process that reused the pid meanwhile). For
/// VMMs launched without recorded handles: their daemon died between the launch and
/// writing `handles.json`, or that file was lost. `tag` must be specific (a VM's
/// control socket path); an empty tag finds nothing.
pub fn find_tagged(tag: &str) -> Vec<(u32, u64)> {
    if tag.is_empty() {
        return vec![];
    }
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid > 1 && pid != me)
        .filter_map(|pid| {
            let start = start_time(pid)?;
            Identity {
                pid,
                tag,
                start_time: Some(start),
            }
            .alive()
            .then_some((pid, start))
        })
        .collect()
}

/// SIGKILL every live process whose command line contains `tag` (see
/// [`find_tagged`]) and wait up to `timeout` for each to go. Returns how many were
/// signalled.
pub async fn kill_tagged(tag: &str, timeout: Duration) -> usize {
    let found = find_tagged(tag);
    for &(pid, start) in &found {
        let id = Identity {
            pid,
            tag,
            start_time: Some(start),
        };
        tracing::warn!(
            pid,
            tag,
            "killing a leftover process of a VM (a VMM whose daemon died before recording its handles, or a passt that outlived its VMM)"
        );
        id.signal(libc::SIGKILL);
        id.wait_exit(timeout).await;
    }
    found.len()
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
        let id = Identity {
            pid,
            tag: "sleep",
            start_time: None,
        };
        assert!(id.wait_exit(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn finds_and_kills_processes_by_tag_only_when_the_tag_is_specific() {
        let tag = format!("banger-orphan-test-{}", std::process::id());
        // `exec -a` puts the tag into the command line of a plain sleep.
        let mut child = std::process::Command::new("bash")
            .args(["-c", &format!("exec -a {tag} sleep 30")])
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = Instant::now();
        // Until the exec is done: bash's own command line names the tag too, and
        // during the exec the command line is briefly unreadable (a flake under load).
        let execd = || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(tag.as_bytes()))
        };
        while !execd() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            find_tagged(&tag).iter().map(|p| p.0).collect::<Vec<_>>(),
            [pid]
        );
        assert!(find_tagged("").is_empty(), "an empty tag matches nothing");
        assert_eq!(kill_tagged(&tag, Duration::from_secs(5)).await, 1);
        let _ = child.wait();
        assert!(find_tagged(&tag).is_empty());
    }

    #[test]
    fn pid_0_and_1_and_empty_tags_are_never_alive() {
        // Our own process has a cmdline; an empty tag would match it.
        let me = std::process::id();
        assert!(!alive_with_tag(me, ""));
        assert!(!alive_with_tag(0, "x"));
        assert!(!alive_with_tag(1, ""));
        // init's cmdline contains "/" on any system; still never ours.
        assert!(!alive_with_tag(1, "/"));
    }

    #[test]
    fn a_different_start_time_means_another_process() {
        let me = std::process::id();
        let cmdline = std::fs::read(format!("/proc/{me}/cmdline")).unwrap();
        let tag = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .next()
            .unwrap()
            .to_string();
        let started = start_time(me).unwrap();
        let same = Identity {
            pid: me,
            tag: &tag,
            start_time: Some(started),
        };
        assert!(same.alive());
        // Same pid and command line, another start time: a reused pid.
        let reused = Identity {
            start_time: Some(started + 1),
            ..same
        };
        assert!(!reused.alive());
        // Unknown start time (old handles): the tag decides.
        assert!(Identity {
            start_time: None,
            ..same
        }
        .alive());
    }

    #[test]
    fn stat_parsing_survives_hostile_command_names() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.start_time, 987654);
        assert!(!s.zombie);
        let z = parse_stat("7 (x) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0").unwrap();
        assert!(z.zombie);
        assert_eq!(z.start_time, 55);
        assert!(parse_stat("garbage").is_none());
    }
}
