//! End-to-end section `faults` (issue 16): nothing leaks over many create/delete
//! cycles, a daemon killed (`kill -9`) at any start step leaves nothing that a restart
//! and a `vm delete` do not clean up, a torn `handles.json` does not orphan a running
//! VMM, the console log is capped under a real VMM, and the TCG notice is shown once
//! per host boot.
//!
//! Before/after counts are printed (`faults: ...` lines) for the record.

use super::{log, stderr, Env};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What must not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    fds: usize,
    taps: usize,
    files: usize,
    rows: usize,
    rss_kib: u64,
}

impl Counts {
    fn take(env: &Env) -> Counts {
        let pid = env.daemon_pid();
        // The fewest descriptors over a second: a connection the daemon has not yet
        // closed after its client left (or a blocking task finishing) is not a leak,
        // and a leak stays in every sample.
        let fds = (0..5)
            .map(|i| {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let taps = env.taps().lines().filter(|l| !l.is_empty()).count();
        Counts {
            fds,
            taps,
            files: count_files(env.home.path()),
            rows: count_rows(&env.state().join("banger.db")),
            rss_kib,
        }
    }

    fn print(what: &str, before: Counts, after: Counts) {
        eprintln!(
            "faults: {what}: fds {} -> {}, taps {} -> {}, files {} -> {}, rows {} -> {}, daemon RSS {} KiB -> {} KiB",
            before.fds,
            after.fds,
            before.taps,
            after.taps,
            before.files,
            after.files,
            before.rows,
            after.rows,
            before.rss_kib,
            after.rss_kib
        );
    }

    /// No growth; RSS may move by allocator noise, at most `rss_slack_kib`.
    fn assert_no_growth(what: &str, before: Counts, after: Counts, rss_slack_kib: u64) {
        Counts::print(what, before, after);
        assert!(after.fds <= before.fds, "{what}: descriptors leaked");
        assert_eq!(after.taps, before.taps, "{what}: taps leaked");
        assert_eq!(after.files, before.files, "{what}: files leaked");
        assert_eq!(after.rows, before.rows, "{what}: rows leaked");
        assert!(
            after.rss_kib <= before.rss_kib + rss_slack_kib,
            "{what}: daemon RSS grew by {} KiB",
            after.rss_kib.saturating_sub(before.rss_kib)
        );
    }
}

/// Every file, directory and socket under `dir` (the log files count once each).
fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

/// Rows in every table of the state database (read-only, beside the daemon).
fn count_rows(db: &Path) -> usize {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .iter()
        .map(|t| {
            c.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize
        })
        .sum()
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = env.banger(args);
    assert!(
        out.status.success(),
        "banger {}: {}",
        args.join(" "),
        stderr(&out)
    );
    stderr(&out)
}

/// Lines of `text` that are the TCG notice.
fn tcg_notices(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("note:") && l.contains("TCG"))
        .count()
}

pub fn faults(env: &Env) {
    cycles_leak_nothing(env);
    killed_daemon_at_each_start_step(env);
    torn_handles_file(env);
    console_is_capped_under_a_real_vmm(env);
    env.assert_nothing_left();
}

fn cycles_leak_nothing(env: &Env) {
    // Warm up: the daemon's first create/boot sets up what it keeps (bridge, NAT,
    // the accelerator verdict, caches).
    ok(env, &["vm", "create", "warm", "--no-start"]);
    ok(env, &["vm", "delete", "warm"]);
    let before = Counts::take(env);
    for _ in 0..100 {
        let out = env
            .cmd(true, &["vm", "create", "cyc", "--no-start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cmd(true, &["vm", "delete", "cyc"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after = Counts::take(env);
    Counts::assert_no_growth("100 create/delete cycles (--no-start)", before, after, 4096);

    ok(env, &["vm", "create", "warm"]);
    ok(env, &["vm", "delete", "-f", "warm"]);
    let before = Counts::take(env);
    let mut notices = 0;
    for i in 0..10 {
        let name = format!("boot{i}");
        let out = env.cmd(true, &["vm", "create", &name]).output().unwrap();
        log(&["vm", "create", &name], &out);
        assert!(out.status.success(), "{}", stderr(&out));
        notices += tcg_notices(&stderr(&out));
        ok(env, &["vm", "delete", "-f", &name]);
    }
    let after = Counts::take(env);
    Counts::assert_no_growth("10 create/boot/delete cycles", before, after, 8192);

    // The TCG notice: once per host boot (this home has shown it already), on every
    // command with --verbose.
    let verbose = env
        .cmd(true, &["vm", "create", "loud", "--verbose"])
        .output()
        .unwrap();
    log(&["vm", "create", "loud", "--verbose"], &verbose);
    assert!(verbose.status.success(), "{}", stderr(&verbose));
    ok(env, &["vm", "delete", "-f", "loud"]);
    if tcg_notices(&stderr(&verbose)) == 0 {
        eprintln!("faults: guests run under KVM here; no TCG notice to count");
    } else {
        eprintln!(
            "faults: TCG notice in 10 boots without --verbose: {notices}; with --verbose: shown"
        );
        assert_eq!(
            notices, 0,
            "the TCG notice was repeated within one host boot"
        );
    }
}

/// The daemon's log, from `from` bytes on.
fn daemon_log(env: &Env, from: usize) -> String {
    let all = std::fs::read(env.state().join("bangerd.log")).unwrap_or_default();
    String::from_utf8_lossy(all.get(from..).unwrap_or_default()).into_owned()
}

fn kill_daemon(env: &Env) {
    let pid = env.daemon_pid();
    super::run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts beside a freshly started daemon that has only listed VMs, so two such
/// counts compare daemons in the same condition.
fn counts_of_a_fresh_daemon(env: &Env) -> Counts {
    assert!(env.banger(&["daemon", "stop"]).status.success());
    ok(env, &["vm", "list"]);
    Counts::take(env)
}

fn killed_daemon_at_each_start_step(env: &Env) {
    let before = counts_of_a_fresh_daemon(env);
    killed_at_each_point(env);
    let after = counts_of_a_fresh_daemon(env);
    Counts::assert_no_growth(
        "daemon kill -9 at each start step, restart, delete",
        before,
        after,
        8192,
    );
}

fn killed_at_each_point(env: &Env) {
    for point in ["disks", "network", "launched", "boot", "agent", "ssh"] {
        assert!(env.banger(&["daemon", "stop"]).status.success());
        let name = format!("kill-{point}");
        let from = std::fs::metadata(env.state().join("bangerd.log"))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        // The daemon this create starts inherits the pause.
        let mut c = env.cmd(true, &["vm", "create", &name]);
        c.env("BANGER_FAIL_AT", format!("pause:{point}"));
        let mut create = c.spawn().unwrap();
        let t = Instant::now();
        let paused = loop {
            if daemon_log(env, from).contains(&format!("failpoint paused at {point}")) {
                break true;
            }
            if create.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(
                t.elapsed() < Duration::from_secs(900),
                "never paused at {point}:\n{}",
                daemon_log(env, from)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if !paused {
            eprintln!("faults: this build has no start step {point}; skipped");
            let _ = env.banger(&["vm", "delete", "-f", &name]);
            continue;
        }
        kill_daemon(env);
        let _ = create.wait();
        // The next command starts a fresh daemon (no pause): it settles the VM.
        let v = env.show(&name);
        eprintln!(
            "faults: killed at {point}: VM is {} ({})",
            v["state"], v["error"]
        );
        assert_ne!(
            v["state"], "creating",
            "a VM stuck half-created after a restart"
        );
        let home = env.home.path().display().to_string();
        let ps = Command::new("pgrep")
            .args(["-af", "qemu-system"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&ps.stdout).contains(&home),
            "a VMM survived the restart of a daemon killed at {point}"
        );
        ok(env, &["vm", "delete", "-f", &name]);
        env.assert_nothing_left();
    }
}

fn torn_handles_file(env: &Env) {
    ok(env, &["vm", "create", "torn"]);
    let id = env.show("torn")["id"].as_str().unwrap().to_string();
    kill_daemon(env);
    // What a crash during a write of handles.json could leave without fsync+rename.
    let h = env.state().join("vms").join(&id).join("handles.json");
    let whole = std::fs::read(&h).unwrap();
    std::fs::write(&h, &whole[..whole.len() / 2]).unwrap();
    let v = env.show("torn");
    eprintln!(
        "faults: torn handles.json: VM is {} after the restart",
        v["state"]
    );
    assert_eq!(v["state"], "stopped");
    let home = env.home.path().display().to_string();
    let ps = Command::new("pgrep")
        .args(["-af", "qemu-system"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&home),
        "the VMM of a VM with a torn handles.json kept running"
    );
    assert_eq!(env.taps(), "");
    ok(env, &["vm", "delete", "torn"]);
}

fn console_is_capped_under_a_real_vmm(env: &Env) {
    ok(env, &["vm", "create", "noisy"]);
    let id = env.show("noisy")["id"].as_str().unwrap().to_string();
    let log_path = env
        .home
        .path()
        .join("run/vms")
        .join(&id)
        .join("console.log");
    // Grow the log past the cap from the host (faster than a guest's UART), then
    // let the monitor rotate it while QEMU keeps its descriptor.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    std::io::Write::write_all(&mut f, &vec![b'x'; 6 << 20]).unwrap();
    drop(f);
    let t = Instant::now();
    while std::fs::metadata(&log_path).unwrap().len() > 4 << 20 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the console log was never rotated"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // QEMU appends: the guest's next line starts the file, no hole before it.
    env.ssh("noisy", "echo console-after-rotation > /dev/ttyS0");
    let t = Instant::now();
    loop {
        let now = std::fs::read(&log_path).unwrap();
        if String::from_utf8_lossy(&now).contains("console-after-rotation") {
            eprintln!(
                "faults: console after rotation: {} bytes, {} kept",
                now.len(),
                std::fs::metadata(log_path.with_file_name("console.log.1"))
                    .unwrap()
                    .len()
            );
            assert!(
                now.len() < 1 << 20,
                "the log still holds the flood ({} bytes)",
                now.len()
            );
            assert!(!now.contains(&0), "a hole of zeros: QEMU does not append");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest's line never reached the log"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = env.banger(&["vm", "logs", "noisy"]);
    assert!(
        logs.stdout.len() <= 64 << 10,
        "vm logs read more than its tail"
    );
    ok(env, &["vm", "delete", "-f", "noisy"]);
}
