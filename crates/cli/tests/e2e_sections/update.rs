//! End-to-end section for issue 13: a running VM keeps running across `banger update`
//! (same boot id, still answers over ssh), across a release that fails and is rolled
//! back, and across the good update after it. It needs a booted guest, so it runs inside
//! `e2e.rs`'s environment. To wire it in, add to `e2e.rs`:
//!
//! ```ignore
//! mod support;                                   // tests/support/mod.rs
//! #[path = "e2e_sections/update.rs"]
//! mod update_section;
//! // in end_to_end(), after the default image exists:
//! update_section::vm_survives_update(&env);
//! ```
//!
//! It uses `Env`'s `home` (BANGER_HOME) and `netns`, stops the e2e daemon, drives an
//! installed test-key banger (see `support`) with the release server inside the test's
//! network namespace, and leaves no daemon or VM of its own behind (the e2e's own
//! banger starts its daemon again on its next call).

use super::agent_cli_section::assert_shape;
use super::support::*;
use super::Env;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Run `bin` in the e2e's namespace with its BANGER_HOME (as the e2e's owner in
/// privsep mode).
fn run_in(env: &Env, bin: &Path, args: &[&str]) -> Output {
    let o = env
        .program(true, "900", bin)
        .args(args)
        .env_remove("BANGER_DAEMON")
        .output()
        .unwrap();
    eprintln!(
        "$ {} {} -> {}\n{}{}",
        bin.display(),
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn boot_id(env: &Env, banger: &Path, vm: &str) -> String {
    let o = run_in(
        env,
        banger,
        &[
            "vm",
            "ssh",
            vm,
            "--",
            "cat",
            "/proc/sys/kernel/random/boot_id",
        ],
    );
    assert!(o.status.success(), "the VM does not answer");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A listener on 127.0.0.1:`port` inside the namespace `netns` (bound on a thread that
/// joined it; the socket stays in that namespace).
fn listen_in_netns(netns: &str, port: u16) -> std::net::TcpListener {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd we opened.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
    })
    .join()
    .unwrap()
}

pub fn vm_survives_update(env: &Env) {
    let (trust, _) = TestTrust::load(false);
    let old_bins = trust.build_old();
    let work = env.home.path().join("update-e2e");
    let www = work.join("www");
    reset(&www);
    let agent = agent(&work);
    let dir: PathBuf = install_dir(&work.join("install"), &old_bins, &agent);
    // A user's own install (privsep mode): the owner's files, which it updates.
    env.give(&work);
    let banger = dir.join("banger");
    let new = identity(&new_bins().join("banger"));

    // A VM booted by the e2e's daemon, then adopted by the installed (old) one.
    let e2e_banger = PathBuf::from(env!("CARGO_BIN_EXE_banger"));
    assert!(run_in(env, &e2e_banger, &["vm", "create", "upd"])
        .status
        .success());
    let boot = boot_id(env, &e2e_banger, "upd");
    assert!(run_in(env, &e2e_banger, &["daemon", "stop"])
        .status
        .success());
    assert_eq!(
        boot_id(env, &banger, "upd"),
        boot,
        "adopted by the installed daemon"
    );

    let server = banger_update::test_support::Server::from_listener(
        listen_in_netns(&env.netns, trust.port),
        &www,
    )
    .unwrap();

    // A release whose daemon cannot start: rolled back, the VM untouched.
    publish(
        &www,
        &trust.key,
        &new_bins(),
        &agent,
        Broken::DaemonWontStart,
    );
    let o = run_in(env, &banger, &["update"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("previous version was restored"));
    assert_eq!(identity(&banger).commit, OLD_COMMIT);
    assert_eq!(
        boot_id(env, &banger, "upd"),
        boot,
        "same boot after a rollback"
    );

    // The good release: the VM keeps running across the swap and daemon restart.
    reset(&www);
    publish(&www, &trust.key, &new_bins(), &agent, Broken::No);
    // --check --json: the release is available (docs/schemas.json `update`).
    let o = run_in(env, &banger, &["update", "--check", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("update", &v);
    assert_eq!(v["outcome"], "available", "{v}");
    assert_eq!(v["to"]["commit"], new.commit.as_str(), "{v}");
    let o = run_in(env, &banger, &["update", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_shape("update", &v);
    assert_eq!(v["outcome"], "updated", "{v}");
    assert_eq!(identity(&banger).commit, new.commit);
    assert_eq!(
        boot_id(env, &banger, "upd"),
        boot,
        "same boot after the update"
    );
    let list = run_in(env, &banger, &["vm", "show", "upd", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v["state"], "running");
    drop(server);

    assert!(run_in(env, &banger, &["vm", "delete", "-f", "upd"])
        .status
        .success());
    let _ = run_in(env, &banger, &["daemon", "stop"]);
}
