//! Rootless mode's guest networking (docs/rootless.md): with no root helper and no
//! root, there is no bridge, tap or NAT, so each VM gets a user-space network stack
//! of its own, started as the daemon's user:
//!
//! - **passt** (the default when installed): one `passt` per VM on a unix socket in
//!   the VM's runtime directory, which QEMU joins with `-netdev stream`. passt
//!   translates the guest's frames to ordinary sockets of the user (NAT behind the
//!   host's address), forwards the guest's DNS queries (sent to the subnet's last
//!   address, as with QEMU's stack) to the host's resolver, and listens for the VM's published ports (`-t`). It runs with
//!   `--one-off`, so it quits when its QEMU goes, and `--no-map-gw`, so the guest
//!   cannot reach services bound to the host's loopback through its gateway.
//! - **QEMU's user-mode networking** (libslirp) otherwise: the same addressing inside
//!   QEMU itself, published ports as `hostfwd`. It always maps the gateway to the
//!   host's loopback; `banger doctor` suggests installing passt.
//!
//! The guest keeps its address from banger's subnet and its gateway; only the host
//! side differs. Published ports and the guest's ssh port are fixed when the VM
//! starts (neither stack can add a listener later), so `vm port-forward` on a
//! running rootless VM is refused with what to do instead.

use super::stages::{Steps, Undo};
use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_model::VmRecord;
use banger_vmm::{HostForward, MachineSpec, NetBackend};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// passt's socket in the VM's runtime directory.
pub const PASST_SOCKET: &str = "passt.sock";
/// passt's log (bounded by passt itself, `--log-size`).
pub const PASST_LOG: &str = "passt.log";
/// The loopback port forwarded to the guest's sshd, for `ssh NAME.vm` and `vm ssh`.
pub const SSH_PORT_FILE: &str = "ssh-port";
/// `BANGER_ROOTLESS_NET=passt|user` picks the stack (default: passt when installed).
pub const NET_ENV: &str = "BANGER_ROOTLESS_NET";
/// The guest MTU over passt (its own default): a 65520-byte frame costs QEMU and the
/// guest about what a 1500-byte one does, so bulk transfers need ~40x fewer of them.
pub const PASST_MTU: u32 = 65520;
/// How long a passt whose QEMU is gone gets to quit by itself.
const PASST_GRACE: Duration = Duration::from_secs(1);
/// How long passt gets to bind its socket.
const PASST_READY: Duration = Duration::from_secs(10);
/// Largest passt log kept.
const PASST_LOG_BYTES: &str = "1048576";

/// The user-space stack of a rootless daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNet {
    /// passt, at this path.
    Passt(PathBuf),
    /// QEMU's user-mode networking.
    User,
}

impl UserNet {
    /// The stack for this host: `BANGER_ROOTLESS_NET`, else passt when it is
    /// installed, else QEMU's user-mode networking.
    pub fn detect() -> UserNet {
        let wanted = std::env::var(NET_ENV).unwrap_or_default();
        // Found the way `banger doctor` finds it, so both name the same passt.
        let passt = banger_hostcheck::which::which("passt");
        match (wanted.as_str(), passt) {
            ("user", _) => UserNet::User,
            (_, Some(p)) => UserNet::Passt(p),
            (w, None) => {
                if w == "passt" {
                    tracing::warn!(
                        "{NET_ENV}=passt but passt is not installed (apt-get install passt): \
                         using QEMU's user-mode networking"
                    );
                }
                UserNet::User
            }
        }
    }

    /// One line for logs and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            UserNet::Passt(p) => format!("passt ({})", p.display()),
            UserNet::User => {
                "QEMU user-mode networking (passt is not installed: apt-get install passt)".into()
            }
        }
    }
}

/// How one start attaches its guest to a network.
#[derive(Debug, Clone)]
pub(crate) enum Attachment {
    /// The VM's tap on banger's bridge.
    Tap(String),
    /// A passt to start just before the VMM (again for a relaunch: `--one-off`
    /// passt quits with its first QEMU).
    Passt(PasstPlan),
    /// QEMU's user-mode networking, and the loopback port of the guest's sshd.
    User(NetBackend, u16),
    /// No network at all (a warm snapshot's template).
    None,
}

/// One VM's passt: its command line and socket.
#[derive(Debug, Clone)]
pub(crate) struct PasstPlan {
    /// QEMU's user-mode networking with the same forwards, for when passt cannot
    /// start (it refuses to run on a host without a default route, e.g. offline).
    pub fallback: NetBackend,
    pub ssh_port: u16,
    pub binary: PathBuf,
    pub socket: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// ` banger.mtu=65520`, appended to the guest's command line over passt.
fn mtu_param() -> String {
    format!(" {}={PASST_MTU}", banger_contract::cmdline::MTU)
}

impl PasstPlan {
    /// `spec` on QEMU's user-mode stack instead, for a start whose passt could not
    /// run: the same forwards, and the default MTU (that stack carries 1500-byte
    /// frames only).
    pub fn fallback_spec(&self, spec: &MachineSpec) -> MachineSpec {
        let mut s = spec.clone();
        if let Some(n) = s.net.as_mut() {
            n.backend = self.fallback.clone();
        }
        s.cmdline = s.cmdline.replace(&mtu_param(), "");
        s
    }
}

impl Attachment {
    /// The tap's name ("" without one), as `handles.json` records it.
    pub fn tap(&self) -> &str {
        match self {
            Attachment::Tap(t) => t,
            _ => "",
        }
    }

    /// The VMM's side of it.
    pub fn backend(&self) -> NetBackend {
        match self {
            Attachment::Tap(_) | Attachment::None => NetBackend::Tap,
            Attachment::Passt(p) => NetBackend::Stream {
                socket: p.socket.clone(),
            },
            Attachment::User(b, _) => b.clone(),
        }
    }

    /// The kernel command-line parameter for the guest's MTU when not the default
    /// (` banger.mtu=65520`).
    pub fn mtu_param(&self) -> Option<String> {
        matches!(self, Attachment::Passt(_)).then(mtu_param)
    }

    /// The loopback port forwarded to the guest's sshd (rootless mode).
    pub fn ssh_port(&self) -> Option<u16> {
        match self {
            Attachment::Passt(p) => Some(p.ssh_port),
            Attachment::User(_, port) => Some(*port),
            _ => None,
        }
    }
}

/// The address the user-mode stack's DNS forwarder answers on: the subnet's last
/// host address, or the one before it when that is the guest's own.
fn user_dns(app: &App, ip: Ipv4Addr) -> Ipv4Addr {
    let last = app.config.subnet.last_host();
    if last == ip {
        Ipv4Addr::from(u32::from(last) - 1)
    } else {
        last
    }
}

/// The name server a rootless guest is given: the same address for both stacks
/// (passt forwards what is sent there to the host's resolver, QEMU's stack answers
/// there itself), so a start that falls back from passt keeps working DNS.
pub(crate) fn guest_dns(app: &App, ip: Ipv4Addr) -> Vec<IpAddr> {
    vec![IpAddr::V4(user_dns(app, ip))]
}

/// A free loopback TCP port, for the guest's sshd (the stack listens on it from the
/// VM's start; a port taken in between fails the start, which says so).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DaemonError::io(
        "choosing a loopback port for ssh on",
        Path::new("127.0.0.1"),
    ))?;
    l.local_addr().map(|a| a.port()).map_err(DaemonError::io(
        "choosing a loopback port for ssh on",
        Path::new("127.0.0.1"),
    ))
}

/// The `network` step in rootless mode: what the VMM will attach to, with the VM's
/// published ports and a loopback port for its sshd (recorded in the runtime
/// directory at launch, see [`record_ssh_port`]).
pub(crate) fn attach(
    app: &App,
    net: &UserNet,
    rec: &VmRecord,
    rt_dir: &Path,
) -> Result<Attachment> {
    let ssh = free_port()?;
    let mut forwards: Vec<HostForward> = super::forward::load(app, &rec.id)
        .into_iter()
        .map(|p| HostForward {
            host_ip: p.host_ip,
            host_port: p.host_port,
            guest_ip: rec.ip,
            guest_port: p.guest_port,
        })
        .collect();
    forwards.push(HostForward {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port: ssh,
        guest_ip: rec.ip,
        guest_port: 22,
    });
    let subnet = app.config.subnet;
    let user = NetBackend::User {
        net: subnet.to_string(),
        host: subnet.gateway(),
        dns: user_dns(app, rec.ip),
        forwards: forwards.clone(),
    };
    Ok(match net {
        UserNet::Passt(binary) => {
            let socket = rt_dir.join(PASST_SOCKET);
            let log = rt_dir.join(PASST_LOG);
            Attachment::Passt(PasstPlan {
                fallback: user,
                ssh_port: ssh,
                binary: binary.clone(),
                args: passt_args(
                    &socket,
                    &log,
                    rec.ip,
                    subnet.prefix,
                    subnet.gateway(),
                    user_dns(app, rec.ip),
                    &forwards,
                ),
                socket,
                log,
            })
        }
        UserNet::User => Attachment::User(user, ssh),
    })
}

/// passt's command line (after the binary).
fn passt_args(
    socket: &Path,
    log: &Path,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    dns: Ipv4Addr,
    forwards: &[HostForward],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--quiet",
        "--one-off",
        "--ipv4-only",
        "--no-map-gw",
        "--socket",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(socket.display().to_string());
    a.extend([
        "--log-file".into(),
        log.display().to_string(),
        "--log-size".into(),
        PASST_LOG_BYTES.into(),
        "--address".into(),
        ip.to_string(),
        "--netmask".into(),
        prefix.to_string(),
        "--gateway".into(),
        gateway.to_string(),
        "--dns-forward".into(),
        dns.to_string(),
        "--udp-ports".into(),
        "none".into(),
    ]);
    for f in forwards {
        a.push("--tcp-ports".into());
        a.push(format!("{}/{}:{}", f.host_ip, f.host_port, f.guest_port));
    }
    a
}

/// What only this VM's passt has on its command line (its socket argument, whole):
/// QEMU names the same path, but never after `--socket`.
fn passt_tag(socket: &Path) -> String {
    format!("--socket\0{}\0", socket.display())
}

/// Start `plan`'s passt in a session of its own and wait for its socket (undo: stop
/// it). Its own session: a Ctrl-C at the CLI or the daemon's end never reaches it;
/// it quits when its QEMU does.
pub(crate) async fn start_passt(plan: &PasstPlan, steps: &mut Steps<'_>) -> Result<()> {
    stop_passt(&plan.socket).await;
    let _ = std::fs::remove_file(&plan.socket);
    let _ = std::fs::remove_file(&plan.log);
    let mut cmd = tokio::process::Command::new(&plan.binary);
    cmd.args(&plan.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(DaemonError::io("starting passt", &plan.binary))?;
    steps.created(Undo::StopPasst(plan.socket.clone()));
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DaemonError::UserNet(format!(
                "passt exited ({status}) before the VM started: {}",
                crate::vm::start::tail_text(&plan.log, 2048).trim()
            )));
        }
        if socket_ready(&plan.socket) {
            break;
        }
        if t.elapsed() > PASST_READY {
            let _ = child.start_kill();
            return Err(DaemonError::UserNet(format!(
                "passt did not open {} within {PASST_READY:?}: {}",
                plan.socket.display(),
                crate::vm::start::tail_text(&plan.log, 2048).trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // tokio reaps it when it exits; dropping the handle neither kills nor leaks it.
    drop(child);
    Ok(())
}

/// Whether passt's socket exists (passt serves one client: connecting to test it
/// would be that client, so existence is the check).
fn socket_ready(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Stop the passt of the VM whose passt socket is `socket`, if one still runs. It
/// quits by itself once its QEMU is gone (`--one-off`), which takes it a moment after
/// a kill: it gets [`PASST_GRACE`] to do so before it is killed.
pub(crate) async fn stop_passt(socket: &Path) {
    let tag = passt_tag(socket);
    let t = Instant::now();
    while !banger_vmm::process::find_tagged(&tag).is_empty() {
        if t.elapsed() > PASST_GRACE {
            tracing::debug!(socket = %socket.display(), "passt outlived its QEMU; killing it");
            banger_vmm::process::kill_tagged(&tag, Duration::from_secs(5)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Record the loopback port of the guest's sshd in its runtime directory (for `vm
/// ssh` and the ssh config; it goes with the directory when the VM stops).
pub(crate) fn record_ssh_port(rt_dir: &Path, port: u16) -> Result<()> {
    let f = rt_dir.join(SSH_PORT_FILE);
    std::fs::write(&f, port.to_string()).map_err(DaemonError::io("recording the ssh port in", &f))
}

/// Remove what a rootless start left in the runtime directory (passt's socket, the
/// ssh port); passt's log stays beside the console log.
pub(crate) fn cleanup(rt_dir: &Path) {
    for f in [PASST_SOCKET, SSH_PORT_FILE] {
        let _ = std::fs::remove_file(rt_dir.join(f));
    }
}

/// The loopback port of `rec`'s sshd when it runs rootless (what `vm ssh`, `vm show`
/// and the ssh config use instead of its address).
pub(crate) fn running_ssh_port(app: &App, rec: &VmRecord) -> Option<u16> {
    app.rootless
        .as_ref()
        .filter(|_| rec.state == banger_model::VmState::Running)
        .and_then(|_| ssh_port(&app.layout.vm_runtime(&rec.id)))
}

/// The loopback port of a running rootless VM's sshd, if recorded.
pub fn ssh_port(rt_dir: &Path) -> Option<u16> {
    use std::io::Read;
    let f = std::fs::File::open(rt_dir.join(SSH_PORT_FILE)).ok()?;
    let mut s = String::new();
    f.take(16).read_to_string(&mut s).ok()?;
    s.trim().parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_gets_the_guest_address_its_ports_and_no_gateway_mapping() {
        let fwd = [HostForward {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 18080,
            guest_ip: "172.30.0.5".parse().unwrap(),
            guest_port: 8080,
        }];
        let a = passt_args(
            Path::new("/run/vm/passt.sock"),
            Path::new("/run/vm/passt.log"),
            "172.30.0.5".parse().unwrap(),
            24,
            "172.30.0.1".parse().unwrap(),
            "172.30.0.254".parse().unwrap(),
            &fwd,
        )
        .join(" ");
        for want in [
            "--one-off",
            "--no-map-gw",
            "--socket /run/vm/passt.sock",
            "--address 172.30.0.5 --netmask 24 --gateway 172.30.0.1",
            "--dns-forward 172.30.0.254",
            "--tcp-ports 127.0.0.1/18080:8080",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
        assert_eq!(
            passt_tag(Path::new("/r/passt.sock")),
            "--socket\0/r/passt.sock\0"
        );
    }

    #[test]
    fn the_ssh_port_file_is_read_bounded_and_checked() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ssh_port(d.path()), None);
        std::fs::write(d.path().join(SSH_PORT_FILE), "2222\n").unwrap();
        assert_eq!(ssh_port(d.path()), Some(2222));
        std::fs::write(d.path().join(SSH_PORT_FILE), "0").unwrap();
        assert_eq!(ssh_port(d.path()), None);
        std::fs::write(d.path().join(SSH_PORT_FILE), "99999").unwrap();
        assert_eq!(ssh_port(d.path()), None);
    }
}
