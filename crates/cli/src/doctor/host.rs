//! Tools, device nodes and privileges.

use super::hints::{install_hint, Distro};
use super::{Check, Status};
use banger_hostcheck::tools::{self, Need};
use banger_hostcheck::which::{which, EXTRA_DIRS};
use std::path::Path;

/// One line per tool banger runs (the table's required and optional rows; the
/// test-only and bench-only ones are not banger's business at run time).
pub fn tool_checks(distro: Distro, root: bool) -> Vec<Check> {
    tools::all()
        .filter(|t| matches!(t.need, Need::Required | Need::Optional))
        .filter_map(|t| {
            let cmd = t.command?;
            Some(match which(cmd) {
                Some(p) => Check::new(cmd, Status::Ok, p.display().to_string()),
                None => Check::new(
                    cmd,
                    if t.need == Need::Required {
                        Status::Fail
                    } else {
                        Status::Warn
                    },
                    format!(
                        "not found on PATH or {} (needed for: {})",
                        EXTRA_DIRS.join(", "),
                        t.why
                    ),
                )
                .fix(install_hint(distro, &t, root)),
            })
        })
        .collect()
}

fn open_rw(p: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).write(true).open(p)
}

/// `/dev/kvm`: present and openable (the daemon's precondition for even probing KVM).
pub fn kvm_check(root: bool) -> Check {
    use banger_hostcheck::accel::{open_kvm, KVM_DEVICE as NAME};
    if !Path::new(NAME).exists() {
        return Check::new(
            NAME,
            Status::Warn,
            "absent: VMs run under QEMU's TCG software emulation (several times slower) and firecracker cannot be used",
        )
        .fix("enable hardware virtualization (VT-x/AMD-V) in the firmware, or nested virtualization if this host is a VM; then load the module: modprobe kvm_intel (or kvm_amd)");
    }
    match open_kvm() {
        Ok(()) => Check::new(NAME, Status::Ok, "present, opens read-write"),
        Err(e) => {
            let c = Check::new(
                NAME,
                Status::Warn,
                format!("present but cannot be opened read-write ({e}): VMs would fall back to software emulation"),
            );
            if root {
                c.fix("check for a security module (SELinux, AppArmor) or a container denying access to /dev/kvm")
            } else {
                c.fix("run banger as root, or add yourself to the kvm group: sudo usermod -aG kvm $USER (then log in again)")
            }
        }
    }
}

/// `/dev/net/tun`: every VM needs a tap, except in rootless mode.
pub fn tun_check(root: bool, mode: Mode) -> Check {
    const NAME: &str = "/dev/net/tun";
    if mode == Mode::Rootless {
        return Check::new(NAME, Status::Info, "not needed in rootless mode (no taps)");
    }
    if !Path::new(NAME).exists() {
        let sudo = if root { "" } else { "sudo " };
        return Check::new(NAME, Status::Fail, "absent: VMs need a tap device each")
            .fix(format!("{sudo}modprobe tun"));
    }
    match open_rw(NAME) {
        Ok(_) => Check::new(NAME, Status::Ok, "present, opens read-write"),
        Err(e) if !root => Check::new(
            NAME,
            Status::Ok,
            format!("present (not openable by this user: {e}; the root daemon opens it)"),
        ),
        Err(e) => Check::new(NAME, Status::Fail, format!("present but cannot be opened: {e}"))
            .fix("check for a security module (SELinux, AppArmor) or a container denying access to /dev/net/tun"),
    }
}

/// Which of the three modes a daemon started by this user runs in (the daemon's
/// rule, `crates/daemon/src/privilege.rs`): root, the root helper, or rootless.
pub fn mode(root: bool) -> Mode {
    let helper = std::path::Path::new(banger_helper::config::DEFAULT_SOCKET).exists()
        || std::env::var_os(banger_helper::HELPER_SOCKET_ENV).is_some();
    match (helper, root) {
        (true, _) => Mode::Helper,
        (false, true) => Mode::Root,
        (false, false) => Mode::Rootless,
    }
}

/// See [`mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The daemon is root and does privileged operations itself.
    Root,
    /// Privileged operations go through banger-helper.
    Helper,
    /// No root anywhere: user-space guest networking (docs/rootless.md).
    Rootless,
}

/// The mode row: who does what, and in rootless mode which network stack guests get.
pub fn mode_check(mode: Mode) -> Check {
    match mode {
        Mode::Root => Check::new("mode", Status::Ok, "root: the daemon creates the bridge and taps itself"),
        Mode::Helper => Check::new(
            "mode",
            Status::Ok,
            "privilege-separated: the daemon runs as you; the bridge, taps and NAT go through banger-helper (see its rows below)",
        ),
        Mode::Rootless => {
            let forced_user = std::env::var(ROOTLESS_NET_ENV).is_ok_and(|v| v == "user");
            match which("passt") {
                Some(p) if !forced_user => Check::new(
                    "mode",
                    Status::Info,
                    format!(
                        "rootless: no root helper; guests reach out through passt ({}), published ports and ssh on loopback, no <vm>.vm names",
                        p.display()
                    ),
                )
                .fix("for a bridge, <vm>.vm names and guests reaching each other: sudo banger system install"),
                _ => Check::new(
                    "mode",
                    Status::Warn,
                    "rootless with QEMU's user-mode networking (passt not installed or BANGER_ROOTLESS_NET=user): slower, and guests can reach services on the host's loopback through their gateway",
                )
                .fix("sudo apt-get install passt (or for a bridge: sudo banger system install)"),
            }
        }
    }
}

/// The daemon's switch between passt and QEMU's user-mode networking.
const ROOTLESS_NET_ENV: &str = "BANGER_ROOTLESS_NET";
