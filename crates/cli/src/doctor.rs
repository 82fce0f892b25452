//! `banger doctor`: is this host ready to run banger, and if not, what to do about it.
//!
//! Deliberately independent of the daemon: the checks are what someone runs when
//! `bangerd` will not start or a VM will not boot, so they only look at this host
//! (tools, device nodes, privileges, the guest agent binary, Firecracker) and at files
//! in banger's state layout (the cached KVM/TCG verdict). Each check prints one line;
//! a problem carries the command that fixes it, phrased for this distribution.

use anstyle::{AnsiColor, Style};
use banger_model::version::{
    firecracker_support, parse_firecracker_version, Support, Version, FIRECRACKER_MIN,
    FIRECRACKER_TESTED,
};
use banger_model::Layout;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long `firecracker --version` may take before we call the binary broken.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Directories searched after `$PATH`: root's tools live there and a user's `$PATH`
/// often lacks them.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Not a problem, worth knowing (e.g. which backend `auto` picks).
    Info,
    /// banger works, but something is degraded or will fail later.
    Warn,
    /// banger will not work until this is fixed.
    Fail,
}

/// One line of the report (also the `--json` element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command or step that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

// ---------------------------------------------------------------------------
// Distribution-aware install hints

/// Package-manager family, from `/etc/os-release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Debian, Ubuntu and derivatives: apt-get.
    Debian,
    /// Fedora, RHEL and derivatives: dnf.
    Fedora,
    /// Arch and derivatives: pacman.
    Arch,
    /// Anything else: a generic hint.
    Other,
}

/// The family from the text of `/etc/os-release`: `ID` first, then each of `ID_LIKE`
/// (so Ubuntu, whose ID_LIKE is `debian`, and Rocky, `rhel centos fedora`, resolve).
pub fn parse_os_release(text: &str) -> Distro {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .unwrap_or_default()
    };
    let id = field("ID");
    let like = field("ID_LIKE");
    std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .find_map(|id| match id.to_ascii_lowercase().as_str() {
            "debian" | "ubuntu" => Some(Distro::Debian),
            "fedora" | "rhel" | "centos" => Some(Distro::Fedora),
            "arch" | "archlinux" => Some(Distro::Arch),
            _ => None,
        })
        .unwrap_or(Distro::Other)
}

/// A package's name per family (they differ, e.g. Debian's `openssh-client` is
/// Fedora's `openssh-clients` and Arch's `openssh`).
#[derive(Debug, Clone, Copy)]
pub struct Pkg {
    debian: &'static str,
    fedora: &'static str,
    arch: &'static str,
}

impl Pkg {
    const fn same(name: &'static str) -> Self {
        Self {
            debian: name,
            fedora: name,
            arch: name,
        }
    }
}

/// The command that installs `pkg` (which provides `tool`); `sudo` when not root.
pub fn install_hint(distro: Distro, pkg: Pkg, tool: &str, root: bool) -> String {
    let sudo = if root { "" } else { "sudo " };
    match distro {
        Distro::Debian => format!("{sudo}apt-get install {}", pkg.debian),
        Distro::Fedora => format!("{sudo}dnf install {}", pkg.fedora),
        Distro::Arch => format!("{sudo}pacman -S {}", pkg.arch),
        Distro::Other => format!(
            "install the package that provides {tool} with your distribution's package manager (on Debian: {})",
            pkg.debian
        ),
    }
}

fn host_distro() -> Distro {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    parse_os_release(&text)
}

// ---------------------------------------------------------------------------
// Tools

struct Tool {
    cmd: &'static str,
    pkg: Pkg,
    /// Missing means FAIL (banger cannot work) rather than WARN.
    required: bool,
    /// What banger uses it for, shown when it is missing.
    why: &'static str,
}

const E2FS: Pkg = Pkg::same("e2fsprogs");
const SSH: Pkg = Pkg {
    debian: "openssh-client",
    fedora: "openssh-clients",
    arch: "openssh",
};

const TOOLS: &[Tool] = &[
    Tool {
        cmd: "qemu-system-x86_64",
        pkg: Pkg {
            debian: "qemu-system-x86",
            fedora: "qemu-system-x86-core",
            arch: "qemu-system-x86",
        },
        required: true,
        why: "running the VMs",
    },
    Tool {
        cmd: "mmdebstrap",
        pkg: Pkg::same("mmdebstrap"),
        required: true,
        why: "building images, including the default one on first use",
    },
    Tool {
        cmd: "mkfs.ext4",
        pkg: E2FS,
        required: true,
        why: "making VM disks",
    },
    Tool {
        cmd: "debugfs",
        pkg: E2FS,
        required: true,
        why: "writing files into VM disks",
    },
    Tool {
        cmd: "e2fsck",
        pkg: E2FS,
        required: true,
        why: "checking disks before they grow",
    },
    Tool {
        cmd: "resize2fs",
        pkg: E2FS,
        required: true,
        why: "growing work disks",
    },
    Tool {
        cmd: "e2label",
        pkg: E2FS,
        required: true,
        why: "image register from an ext4 file",
    },
    Tool {
        cmd: "ssh",
        pkg: SSH,
        required: true,
        why: "commands and shells in VMs",
    },
    Tool {
        cmd: "ssh-keygen",
        pkg: SSH,
        required: true,
        why: "making banger's ssh key",
    },
    Tool {
        cmd: "ip",
        pkg: Pkg {
            debian: "iproute2",
            fedora: "iproute",
            arch: "iproute2",
        },
        required: false,
        why: "inspecting banger0 and the taps; the test suite's network namespaces",
    },
    Tool {
        cmd: "nft",
        pkg: Pkg::same("nftables"),
        required: false,
        why: "outbound NAT for guests",
    },
    Tool {
        cmd: "git",
        pkg: Pkg::same("git"),
        required: false,
        why: "shipping repositories into VMs (vm run ./repo, vm workspace)",
    },
];

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `cmd` on `$PATH`, then in [`EXTRA_DIRS`].
fn find_tool(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| is_executable(p))
}

fn tool_checks(distro: Distro, root: bool) -> Vec<Check> {
    TOOLS
        .iter()
        .map(|t| match find_tool(t.cmd) {
            Some(p) => Check::new(t.cmd, Status::Ok, p.display().to_string()),
            None => Check::new(
                t.cmd,
                if t.required {
                    Status::Fail
                } else {
                    Status::Warn
                },
                format!(
                    "not found on PATH, /usr/sbin or /sbin (needed for: {})",
                    t.why
                ),
            )
            .fix(install_hint(distro, t.pkg, t.cmd, root)),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Devices and privileges

fn open_rw(p: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).write(true).open(p)
}

fn kvm_check(root: bool) -> Check {
    const NAME: &str = "/dev/kvm";
    if !Path::new(NAME).exists() {
        return Check::new(
            NAME,
            Status::Warn,
            "absent: VMs run under QEMU's TCG software emulation (several times slower) and firecracker cannot be used",
        )
        .fix("enable hardware virtualization (VT-x/AMD-V) in the firmware, or nested virtualization if this host is a VM; then load the module: modprobe kvm_intel (or kvm_amd)");
    }
    match open_rw(NAME) {
        Ok(_) => Check::new(NAME, Status::Ok, "present, opens read-write"),
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

fn tun_check(root: bool) -> Check {
    const NAME: &str = "/dev/net/tun";
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

fn root_check(root: bool) -> Check {
    if root {
        Check::new("root", Status::Ok, "running as root")
    } else {
        Check::new(
            "root",
            Status::Warn,
            "not root: bangerd needs root today to create the bridge and taps (CAP_NET_ADMIN) and to build images (mmdebstrap)",
        )
        .fix("run banger as root, e.g. sudo -E banger ... (an unprivileged mode is planned)")
    }
}

// ---------------------------------------------------------------------------
// Accelerator verdict cached by the daemon

/// The accelerator the daemon will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The daemon's `accel.json` (banger-vmm's `accel::Cached`, read without depending on
/// banger-vmm).
#[derive(Debug, Deserialize)]
struct CachedAccel {
    key: String,
    choice: CachedChoice,
}

#[derive(Debug, Deserialize)]
struct CachedChoice {
    accel: Accel,
    reason: String,
}

/// The accelerator line and the accelerator the daemon will use, if known.
///
/// `forced` is `BANGER_ACCEL`; `cached` the contents of `accel.json` (`None` when it
/// does not exist); `boot_id` this boot's id. The cache key starts with the boot id it
/// was probed in: a verdict from an earlier boot is stale (the runtime directory of a
/// non-root user survives reboots) and the daemon will re-probe.
pub fn accel_check(
    forced: Option<&str>,
    cached: Option<Result<String, String>>,
    path: &Path,
    boot_id: &str,
) -> (Check, Option<Accel>) {
    const NAME: &str = "accelerator";
    match forced.map(str::trim).filter(|s| !s.is_empty()) {
        Some("kvm") => {
            return (
                Check::new(NAME, Status::Info, "kvm, forced by BANGER_ACCEL"),
                Some(Accel::Kvm),
            )
        }
        Some("tcg") => {
            return (
                Check::new(NAME, Status::Info, "tcg, forced by BANGER_ACCEL"),
                Some(Accel::Tcg),
            )
        }
        Some(other) => {
            return (
                Check::new(
                    NAME,
                    Status::Warn,
                    format!("BANGER_ACCEL={other:?} is neither kvm nor tcg"),
                )
                .fix("set BANGER_ACCEL=kvm or BANGER_ACCEL=tcg, or unset it to let banger probe"),
                None,
            )
        }
        None => {}
    }
    let text = match cached {
        None => {
            return (
                Check::new(NAME, Status::Info, "not probed yet (first VM start probes)"),
                None,
            )
        }
        Some(Err(e)) => {
            return (
                Check::new(
                    NAME,
                    Status::Warn,
                    format!("cannot read {}: {e}", path.display()),
                )
                .fix(format!(
                    "remove {}; the next VM start probes again",
                    path.display()
                )),
                None,
            )
        }
        Some(Ok(t)) => t,
    };
    let c: CachedAccel = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            return (
                Check::new(
                    NAME,
                    Status::Warn,
                    format!("{} is not a valid verdict: {e}", path.display()),
                )
                .fix(format!(
                    "remove {}; the next VM start probes again",
                    path.display()
                )),
                None,
            )
        }
    };
    if c.key.split('|').next().unwrap_or_default() != boot_id.trim() {
        return (
            Check::new(
                NAME,
                Status::Info,
                "not probed since this boot (the cached verdict is from an earlier boot; the next VM start probes)",
            ),
            None,
        );
    }
    let name = match c.choice.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    (
        Check::new(NAME, Status::Info, format!("{name}: {}", c.choice.reason)),
        Some(c.choice.accel),
    )
}

fn host_accel_check(layout: &Layout) -> (Check, Option<Accel>) {
    let path = layout.runtime.join("accel.json");
    let cached = match std::fs::read_to_string(&path) {
        Ok(t) => Some(Ok(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    };
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let forced = std::env::var("BANGER_ACCEL").ok();
    accel_check(forced.as_deref(), cached, &path, &boot_id)
}

// ---------------------------------------------------------------------------
// Guest agent binary

/// True when `bytes` is an x86-64 ELF executable without a program interpreter
/// (`PT_INTERP`), i.e. static or static-pie. The agent is PID 1 of banger's initrd,
/// which has no libc or dynamic loader: a dynamic build boots to a kernel panic.
/// (banger-image has the same check; the CLI does not depend on banger-image.)
pub fn elf_is_static(bytes: &[u8]) -> Result<bool, &'static str> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    let get = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o| get(o, 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o| get(o, 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let u64_at = |o| {
        get(o, 8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    };
    // 64-bit (class 2), little-endian (data 1), x86-64.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) || u16_at(0x12) != Some(EM_X86_64) {
        return Err("not an x86-64 ELF executable");
    }
    const TRUNC: &str = "ELF headers are truncated or inconsistent";
    let phoff = u64_at(0x20)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or(TRUNC)?;
    let phentsize = usize::from(u16_at(0x36).ok_or(TRUNC)?);
    let phnum = usize::from(u16_at(0x38).ok_or(TRUNC)?);
    if phentsize < 4 {
        return Err(TRUNC);
    }
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(TRUNC)?;
        if u32_at(at).ok_or(TRUNC)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

const AGENT_BUILD: &str = "build it static with `make agent` (cargo build -p banger-agent --profile guest --target x86_64-unknown-linux-gnu with -C target-feature=+crt-static) and copy it beside banger, or point BANGER_AGENT at it";

fn agent_check() -> Check {
    const NAME: &str = "guest agent";
    let (path, from) = match std::env::var_os("BANGER_AGENT").filter(|v| !v.is_empty()) {
        Some(p) => (PathBuf::from(p), "BANGER_AGENT"),
        None => {
            match std::env::current_exe() {
                Ok(exe) => (exe.with_file_name("banger-agent"), "beside banger"),
                Err(e) => {
                    return Check::new(
                    NAME,
                    Status::Fail,
                    format!("cannot locate banger's own executable to find banger-agent beside it: {e}"),
                )
                .fix("set BANGER_AGENT to the static banger-agent binary");
                }
            }
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            return Check::new(
                NAME,
                Status::Fail,
                format!("{} ({from}): {e}", path.display()),
            )
            .fix(AGENT_BUILD)
        }
    };
    match elf_is_static(&bytes) {
        Ok(true) => Check::new(NAME, Status::Ok, format!("{} (static)", path.display())),
        Ok(false) => Check::new(
            NAME,
            Status::Fail,
            format!(
                "{} is dynamically linked: it is also the initrd's init, where no libc exists",
                path.display()
            ),
        )
        .fix(AGENT_BUILD),
        Err(e) => {
            Check::new(NAME, Status::Fail, format!("{}: {e}", path.display())).fix(AGENT_BUILD)
        }
    }
}

// ---------------------------------------------------------------------------
// Firecracker

/// What we learnt about the Firecracker binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firecracker {
    /// Not installed (or `BANGER_FIRECRACKER` points nowhere).
    Missing,
    /// Installed, but it did not report a version we could read.
    Broken(String),
    /// Installed at this version.
    Found(Version),
}

/// Which VMM backend `auto` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// QEMU microvm: works with KVM or TCG.
    Qemu,
    /// Firecracker: needs working KVM.
    Firecracker,
}

/// The `auto` backend and why: Firecracker only when it is installed, its version is
/// usable and KVM is known to work (Firecracker has no software emulation); QEMU
/// otherwise, since it runs everywhere.
pub fn auto_backend(fc: &Firecracker, accel: Option<Accel>) -> (Backend, String) {
    let v = match fc {
        Firecracker::Missing => return (Backend::Qemu, "firecracker is not installed".into()),
        Firecracker::Broken(e) => {
            return (
                Backend::Qemu,
                format!("firecracker is installed but unusable ({e})"),
            )
        }
        Firecracker::Found(v) => *v,
    };
    if !firecracker_support(v).usable() {
        return (
            Backend::Qemu,
            format!(
                "firecracker {v} is outside the supported range (>= {FIRECRACKER_MIN}, {}.x)",
                FIRECRACKER_TESTED.major
            ),
        );
    }
    match accel {
        Some(Accel::Kvm) => (
            Backend::Firecracker,
            format!("firecracker {v} is installed and KVM works"),
        ),
        Some(Accel::Tcg) => (
            Backend::Qemu,
            "KVM does not work on this host (the accelerator is tcg) and firecracker needs KVM"
                .into(),
        ),
        None => (
            Backend::Qemu,
            "KVM has not been verified yet (the first VM start probes it) and firecracker needs working KVM".into(),
        ),
    }
}

/// Run `bin --version`, giving up after [`VERSION_TIMEOUT`].
fn run_version(bin: &Path) -> Result<String, String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e}", bin.display()))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < VERSION_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not finish within {VERSION_TIMEOUT:?}",
                    bin.display()
                ));
            }
            Err(e) => return Err(format!("waiting for {} --version: {e}", bin.display())),
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("{} --version exited with {status}", bin.display()));
    }
    Ok(out)
}

fn firecracker_install_hint() -> String {
    let t = FIRECRACKER_TESTED;
    format!(
        "optional. Firecracker is not in Debian's archive: download firecracker-v{t}-x86_64.tgz from https://github.com/firecracker-microvm/firecracker/releases and install its release-v{t}-x86_64/firecracker-v{t}-x86_64 as /usr/local/bin/firecracker (or set BANGER_FIRECRACKER to it)"
    )
}

fn firecracker_check() -> (Check, Firecracker) {
    const NAME: &str = "firecracker";
    let path = match std::env::var_os("BANGER_FIRECRACKER").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !is_executable(&p) {
                return (
                    Check::new(
                        NAME,
                        Status::Warn,
                        format!("BANGER_FIRECRACKER={} is not an executable file", p.display()),
                    )
                    .fix("point BANGER_FIRECRACKER at the firecracker binary, or unset it to search PATH"),
                    Firecracker::Missing,
                );
            }
            p
        }
        None => match find_tool("firecracker") {
            Some(p) => p,
            None => {
                return (
                    Check::new(NAME, Status::Info, "not installed (VMs use qemu)")
                        .fix(firecracker_install_hint()),
                    Firecracker::Missing,
                )
            }
        },
    };
    let out = match run_version(&path) {
        Ok(o) => o,
        Err(e) => {
            return (
                Check::new(NAME, Status::Warn, e.clone()).fix(firecracker_install_hint()),
                Firecracker::Broken(e),
            )
        }
    };
    let Some(v) = parse_firecracker_version(&out) else {
        let first = out.lines().next().unwrap_or("").trim().to_string();
        let e = format!(
            "{} --version printed no version ({first:?})",
            path.display()
        );
        return (
            Check::new(NAME, Status::Warn, e.clone()).fix(firecracker_install_hint()),
            Firecracker::Broken(e),
        );
    };
    let p = path.display();
    let check = match firecracker_support(v) {
        Support::Supported => Check::new(NAME, Status::Ok, format!("{p}: v{v}")),
        Support::NewerThanTested => Check::new(
            NAME,
            Status::Ok,
            format!("{p}: v{v} (newer than the tested v{FIRECRACKER_TESTED}; should work)"),
        ),
        Support::TooOld => Check::new(
            NAME,
            Status::Warn,
            format!("{p}: v{v} is older than the oldest supported v{FIRECRACKER_MIN}"),
        )
        .fix(firecracker_install_hint()),
        Support::NewMajor => Check::new(
            NAME,
            Status::Warn,
            format!("{p}: v{v} is a newer major version than the tested v{FIRECRACKER_TESTED}; banger does not support it yet"),
        )
        .fix(firecracker_install_hint()),
    };
    (check, Firecracker::Found(v))
}

// ---------------------------------------------------------------------------
// Running and rendering

/// Every check, in display order.
pub fn checks(layout: &Layout) -> Vec<Check> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let distro = host_distro();
    let mut out = tool_checks(distro, root);
    out.push(kvm_check(root));
    out.push(tun_check(root));
    out.push(root_check(root));
    let (accel, accel_kind) = host_accel_check(layout);
    out.push(accel);
    out.push(agent_check());
    let (fc, fc_state) = firecracker_check();
    out.push(fc);
    let (backend, why) = auto_backend(&fc_state, accel_kind);
    let name = match backend {
        Backend::Qemu => "qemu",
        Backend::Firecracker => "firecracker",
    };
    out.push(Check::new(
        "backend (auto)",
        Status::Info,
        format!("{name}: {why}"),
    ));
    out
}

/// The human report: one line per check, its fix indented below it, then a summary.
/// `w` decides about colour (an `anstream` stream strips it when not a terminal or
/// when NO_COLOR is set).
fn render(w: &mut dyn Write, checks: &[Check]) -> std::io::Result<()> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let dim = Style::new().dimmed();
    for c in checks {
        let (label, style) = match c.status {
            Status::Ok => ("ok", Style::new().fg_color(Some(AnsiColor::Green.into()))),
            Status::Info => ("info", Style::new().fg_color(Some(AnsiColor::Cyan.into()))),
            Status::Warn => (
                "warn",
                Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            ),
            Status::Fail => (
                "FAIL",
                Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            ),
        };
        writeln!(
            w,
            "{style}{label:<4}{style:#}  {:<width$}  {}",
            c.name, c.detail
        )?;
        if let Some(fix) = &c.fix {
            writeln!(w, "      {:<width$}  {dim}fix: {fix}{dim:#}", "")?;
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    match (fails, warns) {
        (0, 0) => writeln!(w, "\nall checks passed"),
        (0, n) => writeln!(w, "\nno failures, {n} warning(s)"),
        (f, n) => writeln!(
            w,
            "\n{f} failure(s), {n} warning(s): banger will not work until the failures are fixed"
        ),
    }
}

/// `banger doctor [--json]`: exit status 1 if any check failed.
pub fn run(layout: &Layout, json: bool) -> anyhow::Result<ExitCode> {
    let checks = checks(layout);
    let mut out = anstream::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&checks)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        render(&mut out, &checks)
    }
    .and_then(|()| out.flush());
    match written {
        // `banger doctor | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(anyhow::Error::new(e).context("writing the doctor report to stdout")),
        Ok(()) => {}
    }
    Ok(if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_versions_parse() {
        let v = |a, b, c| Some(Version::new(a, b, c));
        assert_eq!(
            parse_firecracker_version("Firecracker v1.14.1\n"),
            v(1, 14, 1)
        );
        assert_eq!(
            parse_firecracker_version(
                "Firecracker v1.15.0-dev\n\nSupported snapshot data format versions: v6.0.0\n"
            ),
            v(1, 15, 0)
        );
        assert_eq!(parse_firecracker_version("firecracker 1.5"), v(1, 5, 0));
        assert_eq!(parse_firecracker_version("Firecracker vX.Y"), None);
        assert_eq!(parse_firecracker_version(""), None);
        assert_eq!(parse_firecracker_version("v1.2.3.4"), None);
    }

    #[test]
    fn firecracker_range() {
        let s = |a, b, c| firecracker_support(Version::new(a, b, c));
        assert_eq!(s(1, 4, 9), Support::TooOld);
        assert_eq!(s(0, 25, 0), Support::TooOld);
        assert_eq!(s(1, 5, 0), Support::Supported);
        assert_eq!(s(1, 14, 1), Support::Supported);
        assert_eq!(s(1, 14, 2), Support::NewerThanTested);
        assert_eq!(s(1, 20, 0), Support::NewerThanTested);
        assert_eq!(s(2, 0, 0), Support::NewMajor);
        assert!(Support::NewerThanTested.usable());
        assert!(!Support::TooOld.usable() && !Support::NewMajor.usable());
    }

    #[test]
    fn os_release_picks_the_package_manager() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        assert_eq!(parse_os_release(debian), Distro::Debian);
        assert_eq!(
            parse_os_release("ID=ubuntu\nID_LIKE=debian\n"),
            Distro::Debian
        );
        assert_eq!(
            parse_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            Distro::Debian
        );
        assert_eq!(parse_os_release("ID=fedora\n"), Distro::Fedora);
        assert_eq!(
            parse_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            Distro::Fedora
        );
        assert_eq!(parse_os_release("ID=manjaro\nID_LIKE=arch\n"), Distro::Arch);
        assert_eq!(parse_os_release("ID=arch\n"), Distro::Arch);
        assert_eq!(parse_os_release("ID=alpine\n"), Distro::Other);
        assert_eq!(parse_os_release(""), Distro::Other);
        // VERSION_ID must not be mistaken for ID.
        assert_eq!(
            parse_os_release("VERSION_ID=debian\nID=alpine\n"),
            Distro::Other
        );

        let hint = |d, root| install_hint(d, SSH, "ssh", root);
        assert_eq!(hint(Distro::Debian, true), "apt-get install openssh-client");
        assert_eq!(
            hint(Distro::Debian, false),
            "sudo apt-get install openssh-client"
        );
        assert_eq!(hint(Distro::Fedora, true), "dnf install openssh-clients");
        assert_eq!(hint(Distro::Arch, true), "pacman -S openssh");
        let other = hint(Distro::Other, true);
        assert!(
            other.contains("ssh") && other.contains("openssh-client"),
            "{other}"
        );
    }

    #[test]
    fn elf_static_check() {
        match std::fs::read("/bin/ls") {
            Ok(ls) => assert_eq!(elf_is_static(&ls), Ok(false), "/bin/ls is dynamic"),
            Err(e) => println!("skipping the /bin/ls half: cannot read it: {e}"),
        }
        // A minimal x86-64 ELF header with one PT_LOAD program header: static.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12] = 62; // EM_X86_64
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = 1; // PT_LOAD
        assert_eq!(elf_is_static(&elf), Ok(true));
        // The same with a PT_INTERP entry: dynamic.
        elf[64] = 3;
        assert_eq!(elf_is_static(&elf), Ok(false));
        // Program headers past the end: refused, not a panic.
        elf[0x20] = 0xff;
        assert!(elf_is_static(&elf).is_err());
        elf[0x20] = 64;
        elf[0x21..0x28].copy_from_slice(&[0xff; 7]); // absurd offset: no overflow panic
        assert!(elf_is_static(&elf).is_err());
        assert!(elf_is_static(b"#!/bin/sh\n").is_err());
        let mut arm = elf.clone();
        arm[0x12] = 183; // EM_AARCH64
        assert!(elf_is_static(&arm).is_err());
    }

    #[test]
    fn backend_decision_table() {
        let ok = Firecracker::Found(FIRECRACKER_TESTED);
        let newer = Firecracker::Found(Version::new(1, 15, 0));
        let old = Firecracker::Found(Version::new(1, 4, 0));
        let next = Firecracker::Found(Version::new(2, 0, 0));
        let broken = Firecracker::Broken("exit 1".into());
        let cases = [
            (&ok, Some(Accel::Kvm), Backend::Firecracker, "KVM works"),
            (&newer, Some(Accel::Kvm), Backend::Firecracker, "1.15.0"),
            (&ok, Some(Accel::Tcg), Backend::Qemu, "needs KVM"),
            (&ok, None, Backend::Qemu, "not been verified"),
            (
                &old,
                Some(Accel::Kvm),
                Backend::Qemu,
                "outside the supported range",
            ),
            (
                &next,
                Some(Accel::Kvm),
                Backend::Qemu,
                "outside the supported range",
            ),
            (&broken, Some(Accel::Kvm), Backend::Qemu, "unusable"),
            (
                &Firecracker::Missing,
                Some(Accel::Kvm),
                Backend::Qemu,
                "not installed",
            ),
        ];
        for (fc, accel, want, why) in cases {
            let (got, reason) = auto_backend(fc, accel);
            assert_eq!(got, want, "{fc:?} {accel:?}");
            assert!(reason.contains(why), "{fc:?} {accel:?}: {reason}");
        }
    }

    #[test]
    fn accel_verdict_reading() {
        let p = Path::new("/run/banger/accel.json");
        let file = |accel: &str, boot: &str| {
            Some(Ok(format!(
                r#"{{"key":"{boot}|/img/vmlinuz|123","choice":{{"accel":"{accel}","reason":"probe said so"}}}}"#
            )))
        };
        let (c, a) = accel_check(None, file("kvm", "b1"), p, "b1\n");
        assert_eq!((c.status, a), (Status::Info, Some(Accel::Kvm)));
        assert_eq!(c.detail, "kvm: probe said so");
        let (_, a) = accel_check(None, file("tcg", "b1"), p, "b1");
        assert_eq!(a, Some(Accel::Tcg));
        // From an earlier boot: stale, treated as not probed.
        let (c, a) = accel_check(None, file("kvm", "b0"), p, "b1");
        assert_eq!(a, None);
        assert!(c.detail.contains("earlier boot"), "{}", c.detail);
        let (c, a) = accel_check(None, None, p, "b1");
        assert_eq!(
            (c.detail.as_str(), a),
            ("not probed yet (first VM start probes)", None)
        );
        let (c, a) = accel_check(None, Some(Ok("{".into())), p, "b1");
        assert_eq!((c.status, a), (Status::Warn, None));
        assert!(c.fix.is_some());
        // BANGER_ACCEL wins over the cache.
        let (_, a) = accel_check(Some("tcg"), file("kvm", "b1"), p, "b1");
        assert_eq!(a, Some(Accel::Tcg));
        let (c, a) = accel_check(Some("fast"), None, p, "b1");
        assert_eq!((c.status, a), (Status::Warn, None));
    }

    #[test]
    fn report_puts_the_fix_under_its_check() {
        let checks = [
            Check::new("git", Status::Fail, "missing").fix("apt-get install git"),
            Check::new("/dev/kvm", Status::Ok, "present"),
        ];
        let mut out = Vec::new();
        render(&mut anstream::StripStream::new(&mut out), &checks).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "FAIL  git       missing");
        assert_eq!(lines[1], "                fix: apt-get install git");
        assert_eq!(lines[2], "ok    /dev/kvm  present");
        assert_eq!(
            lines.last().copied(),
            Some("1 failure(s), 0 warning(s): banger will not work until the failures are fixed")
        );
    }

    #[test]
    fn json_shape() {
        let c = Check::new("git", Status::Fail, "missing").fix("apt-get install git");
        let v = serde_json::to_value([c]).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!([{"name": "git", "status": "fail", "detail": "missing", "fix": "apt-get install git"}])
        );
    }
}
