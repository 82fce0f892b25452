//! What a guest prints cannot grow the daemon's memory: the ssh poweroff fallback
//! runs a command in the guest whose output the guest controls. Measured with a
//! counting allocator while a stand-in `ssh` (first on PATH) prints 64 MiB on stdout
//! and on stderr. (This binary holds only this test: it changes PATH.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_daemon::vm::guest::{AgentGuest, Guest, Target};
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let n = NOW.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
            PEAK.fetch_max(n, Ordering::Relaxed);
        } else {
            NOW.fetch_sub(l.size() - new, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[tokio::test]
async fn the_ssh_poweroff_fallback_reads_a_bounded_part_of_the_guests_output() {
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nhead -c 67108864 /dev/zero\nhead -c 67108864 /dev/zero >&2\necho done >&2\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);

    let rt = t.path().join("rt");
    let handles = banger_vmm::Handles {
        backend: "qemu".into(),
        pid: 0,
        // No agent answers here: the fallback runs.
        control_socket: rt.join("qmp.sock"),
        agent_socket: rt.join("agent.sock"),
        console_log: rt.join("console.log"),
        accel: banger_vmm::Accel::Tcg,
        start_time: None,
    };
    let known_hosts = t.path().join("known_hosts");
    let guest = AgentGuest::new(t.path().join("id_ed25519"));
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    guest
        .shutdown(Target {
            handles: &handles,
            ip: "127.0.0.1".parse().unwrap(),
            name: "dev",
            known_hosts: &known_hosts,
        })
        .await
        .unwrap();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "peak heap growth while the guest printed 128 MiB: {} KiB",
        grew >> 10
    );
    assert!(
        grew < 8 << 20,
        "the daemon buffered the guest's output: {} MiB",
        grew >> 20
    );
}
