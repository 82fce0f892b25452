//! Test-only (host and helper integration tests). Runs a test body inside a network namespace of its own, so nothing a test creates
//! (bridges, taps, addresses, nftables tables, sysctls) can touch the host's.

// A test harness: a failure here is a test failure, reported by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

/// Whether the tests that need CAP_NET_ADMIN can run; prints why not otherwise.
pub fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: needs root");
        false
    }
}

fn netns_id() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").expect("read own netns")
}

/// Run `body` on a dedicated thread that first moves into a fresh network namespace,
/// driving it with a current-thread runtime so every socket, ioctl and child process
/// stays on that thread (and in that namespace). The namespace dies with the thread.
pub fn in_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let t = std::thread::spawn(move || {
        let host = netns_id();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        assert_ne!(
            netns_id(),
            host,
            "refusing to run: still in the host network namespace"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(body());
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Run a command (from the calling thread, hence in its namespace) and return stdout.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
