//! `banger system run` as a supervisor uses it: the real `banger-helper` as root and a
//! fake `bangerd` (a script recording how it was started: uid, groups, umask, the
//! helper socket it was given) as the owner; SIGTERM stops both and leaves a "guest"
//! the daemon started in its own session running; a daemon that exits on its own takes
//! the helper down with it and fails the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_system::run::{run, RunEnd, RunOptions};
use banger_system::{Owner, SystemLayout};

const OWNER: u32 = 4242;
const EXTRA_GROUP: u32 = 4343;

fn helper_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("banger-helper");
    p.is_file().then_some(p)
}

/// The supervisor, in a child process (as root) so the test can signal it.
#[test]
fn system_run_entry() {
    let Ok(root) = std::env::var("SYSTEM_RUN_ROOT") else {
        println!("skipping: entry point of the supervisor process the system run tests start");
        return;
    };
    let opts = RunOptions {
        owner: Owner {
            name: "banger-test".into(),
            uid: OWNER,
            gid: OWNER,
            home: "/".into(),
            groups: vec![OWNER, EXTRA_GROUP],
        },
        layout: SystemLayout::under(Path::new(&root)),
        helper_bin: PathBuf::from(std::env::var("SYSTEM_RUN_HELPER").unwrap()),
        daemon_bin: PathBuf::from(std::env::var("SYSTEM_RUN_DAEMON").unwrap()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = match rt.block_on(run(&opts)) {
        Ok(RunEnd::Signalled) => 0,
        Ok(RunEnd::Exited { which, status }) => {
            println!("ENDED {which} {status}");
            3
        }
        Err(e) => {
            println!("ERROR {e}");
            2
        }
    };
    std::process::exit(code);
}

const FAKE_DAEMON: &str = r#"#!/bin/sh
out="$BANGER_TEST_OUT"
{
  echo "uid=$(id -u)"
  echo "groups=$(id -G)"
  echo "umask=$(umask)"
  echo "helper=$BANGER_HELPER_SOCKET"
  echo "runtime=$XDG_RUNTIME_DIR"
  echo "state=$XDG_STATE_HOME"
  echo "log=$BANGER_LOG"
  echo "home=${BANGER_HOME:-unset}"
  echo "pid=$$"
} > "$out.tmp"
setsid sleep 300 </dev/null >/dev/null 2>&1 &
echo "guest=$!" >> "$out.tmp"
mv "$out.tmp" "$out"
[ "$BANGER_TEST_MODE" = exit ] && exit 7
trap 'exit 0' TERM
while :; do sleep 0.1; done
"#;

struct Site {
    dir: tempfile::TempDir,
    out: PathBuf,
    daemon: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let daemon = dir.path().join("bangerd");
    std::fs::write(&daemon, FAKE_DAEMON).unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    Site {
        out: shared.join("daemon.env"),
        daemon,
        dir,
    }
}

fn supervisor(s: &Site, helper: &Path, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "system_run_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SYSTEM_RUN_ROOT", s.dir.path().join("root"))
        .env("SYSTEM_RUN_HELPER", helper)
        .env("SYSTEM_RUN_DAEMON", &s.daemon)
        .env("BANGER_TEST_OUT", &s.out)
        .env("BANGER_TEST_MODE", mode)
        .env("BANGER_LOG", "debug")
        .env("BANGER_HOME", "/must/not/pass")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn recorded(out: &Path) -> std::collections::HashMap<String, String> {
    let t = Instant::now();
    while !out.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !stat
        .rsplit_once(')')
        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

fn skip() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: system run starts the helper as root and the daemon as another user");
        return None;
    }
    let h = helper_bin();
    if h.is_none() {
        println!(
            "skipping: no banger-helper beside this test (build it: cargo build -p banger-helper)"
        );
    }
    h
}

#[test]
fn sigterm_stops_both_services_and_leaves_guests_running() {
    let Some(helper) = skip() else { return };
    let s = site();
    let mut sup = supervisor(&s, &helper, "serve");
    let env = recorded(&s.out);
    let l = SystemLayout::under(&s.dir.path().join("root"));

    // The daemon runs as the owner, with initgroups' groups, umask 077, and the
    // contract's environment.
    assert_eq!(env["uid"], OWNER.to_string());
    let mut groups: Vec<&str> = env["groups"].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, [OWNER.to_string(), EXTRA_GROUP.to_string()]);
    assert_eq!(env["umask"], "0077");
    assert_eq!(env["helper"], l.helper_socket().display().to_string());
    assert_eq!(
        env["runtime"],
        s.dir.path().join("root/run").display().to_string()
    );
    assert_eq!(env["log"], "debug", "BANGER_* passes through");
    assert_eq!(env["home"], "unset", "but not BANGER_HOME");
    // The helper answers, and the owner's directories are private.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v = rt
        .block_on(banger_helper::HelperClient::new(l.helper_socket()).ping())
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    for d in [l.state_dir(), l.cache_dir(), l.runtime_dir()] {
        let md = std::fs::metadata(&d).unwrap();
        assert_eq!(
            (md.uid(), md.mode() & 0o777),
            (OWNER, 0o700),
            "{}",
            d.display()
        );
    }
    let helper_sock = std::fs::metadata(l.helper_socket()).unwrap();
    assert_eq!(
        (helper_sock.uid(), helper_sock.mode() & 0o777),
        (OWNER, 0o600)
    );

    // A supervisor's SIGTERM: both stop, the guest stays.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let status = sup.wait().unwrap();
    println!("system run stopped in {:?}", t.elapsed());
    assert!(status.success(), "{status}");
    assert!(!alive(&env["pid"]), "the daemon stopped");
    assert!(
        std::os::unix::net::UnixStream::connect(l.helper_socket()).is_err(),
        "the helper stopped"
    );
    assert!(alive(&env["guest"]), "the guest survived");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(env["guest"].parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_daemon_that_exits_takes_the_helper_down_and_fails_the_run() {
    let Some(helper) = skip() else { return };
    let s = site();
    let sup = supervisor(&s, &helper, "exit");
    let env = recorded(&s.out);
    let out = sup.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("ENDED bangerd exit status: 7"), "{text}");
    let l = SystemLayout::under(&s.dir.path().join("root"));
    assert!(std::os::unix::net::UnixStream::connect(l.helper_socket()).is_err());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(env["guest"].parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_helper_config_for_another_owner_is_refused() {
    let Some(helper) = skip() else { return };
    let s = site();
    let l = SystemLayout::under(&s.dir.path().join("root"));
    let mut cfg = banger_helper::HelperConfig::for_owner(5151, 5151);
    cfg.socket = l.helper_socket();
    banger_system::install::write_helper_config(&l, &cfg).unwrap();
    let out = supervisor(&s, &helper, "serve").wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("serves uid 5151, not banger-test"), "{text}");
    assert!(!s.out.exists(), "nothing was started");
}
