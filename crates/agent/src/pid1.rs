//! The fast init: with `banger.init=agent` the agent stays the guest's PID 1 after
//! switching into the VM's root, instead of handing over to systemd.
//!
//! It does what a development shell needs and nothing else: mounts `/dev/pts`,
//! `/dev/shm`, `/run`, `/tmp` and the cgroup2 hierarchy (`/dev`, `/proc`, `/sys` came
//! along from the initrd; `/etc/resolv.conf` was written before the switch), brings up
//! loopback (eth0 and the hostname were set before the switch), serves the agent
//! channel, starts the image's sshd when it has one (`sshd.rs`), and reaps every
//! orphan. It has no service manager: no cron, journald or udev (so no
//! hot-plugged-device modules), and `systemctl` does not work.
//!
//! It powers off cleanly on the channel's shutdown request or on SIGTERM, SIGINT
//! (ctrl-alt-del), SIGPWR, SIGUSR1 or SIGUSR2 (what `poweroff`, `halt` and `reboot` of
//! busybox send to PID 1): everything gets SIGTERM, then SIGKILL after
//! [`TERM_GRACE`]; then sync, unmount `/root`, remount `/` and the overlay's upper disk
//! read-only, sync again, power off. A reboot request powers off too: banger VMs are
//! restarted by the host.
//!
//! The agent's binary lives in the initrd, which stays in memory (the rootfs under the
//! switched root) for the guest's whole life; nothing of it is visible from the VM's
//! root. So `/proc/self/exe` (and `/proc/1/exe`) names `/init`, a path that means
//! something else (or nothing) in the VM's root: opening or exec'ing the magic link
//! works, resolving its name does not. The agent never re-executes itself, and an
//! updated agent takes effect at the next boot.

use crate::cmdline::BootParams;
use crate::handler::{Agent, Runs};
use crate::init::log;
use crate::{netconf, reap, serve, sshd, sys, vsock};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long processes get between SIGTERM and SIGKILL at power-off.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// Signals that mean "power off" to this init.
const POWER_SIGNALS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Mounts of a dev shell: (source, target, type, flags, data).
const MOUNTS: [(&str, &str, &str, libc::c_ulong, &str); 5] = [
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "nsdelegate",
    ),
];

/// Links devtmpfs does not make (udev or systemd would).
const DEV_LINKS: [(&str, &str); 4] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// Be the guest's init. `initrd_root` is a handle on the initrd's root, kept to reach
/// the overlay's disks again at power-off.
pub fn run(_params: &BootParams, initrd_root: OwnedFd) -> ! {
    // Before any thread exists, so every thread inherits the mask and these signals
    // only ever reach the loop below.
    let mut signals = POWER_SIGNALS.to_vec();
    signals.push(libc::SIGCHLD);
    reap::block(&signals);
    let set = reap::sigset(&signals);
    // ctrl-alt-del becomes SIGINT instead of an immediate reboot.
    // SAFETY: reboot(2) with a constant command, as PID 1.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) };

    mount_dev_shell();
    if let Err(e) = netconf::loopback_up() {
        log(&format!("cannot bring up lo: {e}"));
    }

    let agent = Arc::new(Agent { runs: Runs::AsInit });
    vsock::spawn(agent.clone());
    serve::spawn_serial(serve::DEFAULT_PORT, agent);
    log(banger_contract::cmdline::FAST_INIT_MARKER);
    sshd::spawn();

    loop {
        match reap::wait_signal(&set, Duration::from_secs(1)) {
            Some(libc::SIGCHLD) | None => {
                reap::reap_all();
            }
            Some(sig) => {
                log(&format!("signal {sig}: powering off"));
                break;
            }
        }
    }
    power_off(&initrd_root)
}

fn mount_dev_shell() {
    for (src, target, fstype, flags, data) in MOUNTS {
        let t = Path::new(target);
        if t.is_symlink() {
            log(&format!(
                "not mounting {target}: it is a symlink in this image"
            ));
            continue;
        }
        let r = std::fs::create_dir_all(t)
            .map_err(|e| std::io::Error::new(e.kind(), format!("create {target}: {e}")))
            .and_then(|()| sys::mount(src, t, fstype, flags, Some(data)));
        if let Err(e) = r {
            log(&format!("{e}"));
        }
    }
    for d in ["/run/lock", "/run/user"] {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::set_permissions(
        "/run/lock",
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    );
    for (link, to) in DEV_LINKS {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(to, link);
        }
    }
}

/// Wait until no child is left, reaping, for at most `limit`.
fn wait_children_gone(limit: Duration) -> bool {
    let t = Instant::now();
    loop {
        reap::reap_all();
        if reap::no_children() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn power_off(initrd_root: &OwnedFd) -> ! {
    log("stopping every process");
    // SAFETY: kill(-1) signals every process but PID 1 itself.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
        libc::kill(-1, libc::SIGCONT);
    }
    if !wait_children_gone(TERM_GRACE) {
        log(&format!(
            "processes still running {}s after SIGTERM: killing them",
            TERM_GRACE.as_secs()
        ));
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        wait_children_gone(Duration::from_secs(2));
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let work = Path::new("/root");
    if let Err(e) = sys::umount(work).or_else(|_| sys::remount_ro(work)) {
        log(&format!("{e}"));
    }
    if let Err(e) = sys::remount_ro(Path::new("/")) {
        log(&format!("{e}"));
    }
    // The overlay's upper disk is mounted in the initrd's root, out of sight of the
    // VM's: go back there to flush it to a clean read-only state.
    match sys::chroot_to(initrd_root) {
        Ok(()) => {
            if let Err(e) = sys::remount_ro(Path::new("/mnt/upper")) {
                log(&format!("{e}"));
            }
        }
        Err(e) => log(&format!("{e}")),
    }
    // SAFETY: as above.
    unsafe { libc::sync() };
    log("powering off");
    sys::power_off()
}
