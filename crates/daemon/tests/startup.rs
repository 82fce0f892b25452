//! Daemon startup against the real `bangerd`: one daemon per state directory, and a
//! daemon that stops never removes another daemon's socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::{command, ping, Daemon};
use std::path::Path;
use std::time::{Duration, Instant};

/// XDG variables for a daemon whose state is `state` and runtime `run` (banger
/// appends `banger/` to each).
fn xdg<'a>(state: &'a Path, run: &'a Path, cache: &'a Path) -> Vec<(&'static str, &'a Path)> {
    vec![
        ("XDG_STATE_HOME", state),
        ("XDG_RUNTIME_DIR", run),
        ("XDG_CACHE_HOME", cache),
    ]
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_before_it_touches_anything() {
    let t = tempfile::tempdir().unwrap();
    let (state, cache) = (t.path().join("state"), t.path().join("cache"));
    let (run1, run2) = (t.path().join("run1"), t.path().join("run2"));
    let first = Daemon::start(
        &xdg(&state, &run1, &cache),
        run1.join("banger/bangerd.sock"),
        t.path().join("first.log"),
    );
    // The first daemon's image build in progress.
    let building = state.join("banger/images/.staging/0123456789ab");
    std::fs::create_dir_all(&building).unwrap();
    std::fs::write(building.join("rootfs.ext4"), b"half a build").unwrap();

    // Another runtime directory, so the socket cannot be what stops it.
    let log2 = t.path().join("second.log");
    let mut second = command(&xdg(&state, &run2, &cache), &log2).spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            panic!(
                "a second bangerd runs on the same state directory; its log:\n{}",
                std::fs::read_to_string(&log2).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log2).unwrap();
    eprintln!("second daemon: {status}\n{err}");
    assert!(!status.success());
    assert!(
        err.contains("already using") && err.contains(&format!("pid {}", first.pid())),
        "the refusal names the running daemon: {err}"
    );
    assert!(
        building.join("rootfs.ext4").exists(),
        "the second daemon swept the first one's build"
    );
    assert!(!run2.join("banger/bangerd.sock").exists());
    assert!(ping(&first.socket), "the first daemon still answers");
    first.stop();

    // With the first one gone, the state directory is free again.
    let again = Daemon::start(
        &xdg(&state, &run2, &cache),
        run2.join("banger/bangerd.sock"),
        t.path().join("third.log"),
    );
    again.stop();
}

#[test]
fn an_old_daemon_stopping_leaves_a_new_daemons_socket_alone() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("run");
    let cache = t.path().join("cache");
    let (s1, s2) = (t.path().join("s1"), t.path().join("s2"));
    let socket = run.join("banger/bangerd.sock");
    let old = Daemon::start(
        &xdg(&s1, &run, &cache),
        socket.clone(),
        t.path().join("old.log"),
    );
    // The old daemon's socket file is removed behind its back (a cleanup script, a
    // confused user), and a new daemon binds the same path.
    std::fs::remove_file(&socket).unwrap();
    let new = Daemon::start(
        &xdg(&s2, &run, &cache),
        socket.clone(),
        t.path().join("new.log"),
    );
    old.stop();
    assert!(
        socket.exists(),
        "the old daemon removed the new daemon's socket on its way out"
    );
    assert!(ping(&new.socket), "the new daemon is reachable");
    new.stop();
    assert!(
        !socket.exists(),
        "a daemon removes its own socket when it stops"
    );
}
