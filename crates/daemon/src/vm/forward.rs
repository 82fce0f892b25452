//! Published ports (`vm run/create -p`, `vm port-forward`): the daemon listens on a
//! host address (loopback unless asked otherwise) and relays each TCP connection to
//! the guest's port, the way Docker's userland proxy and Lima's port forwarder do.
//!
//! Why a relay in the daemon rather than DNAT: it needs no firewall rule, works for
//! `127.0.0.1` (DNAT to a guest from loopback needs `route_localnet`), survives
//! whatever network setup the guest has as long as the daemon reaches its address,
//! and stops with the VM. The mappings are stored with the VM (`ports.json` in its
//! state directory) and listened on while it runs: after `vm start`, after a daemon
//! restart that re-adopts it; they are closed when it stops, is killed, dies or is
//! deleted.
//!
//! In rootless mode the guest's address is not reachable from the host, so the VM's
//! user-space network stack listens instead (passt `-t`, QEMU `hostfwd`), with the
//! ports stored here when the VM starts ([`crate::vm::userspace`]); the daemon does
//! not relay.

use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_model::{PortForward, VmRecord, VmState};
use banger_rpc::{PortForwardParams, VmInfo};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::time::Duration;

/// File name inside the VM's state directory.
const FILE: &str = "ports.json";
/// Largest `ports.json` read back (a state file is checked like any input).
const MAX_BYTES: u64 = 64 * 1024;
/// Most published ports per VM.
pub const MAX_PER_VM: usize = 64;
/// How long a relayed connection waits for the guest to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One published port being listened on.
struct Listening {
    forward: PortForward,
    guest_ip: Ipv4Addr,
    task: tokio::task::AbortHandle,
}

/// The listeners of running VMs, by VM name.
#[derive(Default)]
pub struct Forwards(Mutex<HashMap<String, Vec<Listening>>>);

impl Forwards {
    fn take(&self, name: &str) -> Vec<Listening> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(name).unwrap_or_default()
    }

    fn put(&self, name: &str, l: Vec<Listening>) {
        if l.is_empty() {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().extend(l);
    }
}

/// The mappings stored with VM `id` (none when the file is missing or unreadable).
pub fn load(app: &App, id: &str) -> Vec<PortForward> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(app.layout.vm_dir(id).join(FILE)) else {
        return vec![];
    };
    let mut buf = vec![];
    if f.take(MAX_BYTES).read_to_end(&mut buf).is_err() {
        return vec![];
    }
    let mut v: Vec<PortForward> = serde_json::from_slice(&buf).unwrap_or_default();
    v.truncate(MAX_PER_VM);
    v
}

/// Store the mappings of VM `id` (atomically: temp file, fsync, rename).
pub fn save(app: &App, id: &str, ports: &[PortForward]) -> Result<()> {
    use std::io::Write;
    let dir = app.layout.vm_dir(id);
    std::fs::create_dir_all(&dir).map_err(DaemonError::io("creating", &dir))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let body = serde_json::to_vec(ports).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(DaemonError::io("writing", &path))
}

/// Refuse mappings that cannot work: too many, one host address twice, or a host
/// port something already listens on (checked by binding it for a moment).
pub fn check_new(ports: &[PortForward], existing: &[PortForward]) -> Result<()> {
    if ports.len() + existing.len() > MAX_PER_VM {
        return Err(DaemonError::BadRequest(format!(
            "at most {MAX_PER_VM} published ports per VM"
        )));
    }
    let mut seen: Vec<(Ipv4Addr, u16)> =
        existing.iter().map(|p| (p.host_ip, p.host_port)).collect();
    for p in ports {
        if seen.contains(&(p.host_ip, p.host_port)) {
            return Err(DaemonError::BadRequest(format!(
                "host port {}:{} is published twice",
                p.host_ip, p.host_port
            )));
        }
        seen.push((p.host_ip, p.host_port));
        std::net::TcpListener::bind((p.host_ip, p.host_port)).map_err(|e| in_use(p, &e))?;
    }
    Ok(())
}

fn in_use(p: &PortForward, e: &std::io::Error) -> DaemonError {
    DaemonError::BadRequest(format!(
        "cannot listen on {}:{} for -p {}:{}:{} ({e}); pick another host port",
        p.host_ip, p.host_port, p.host_ip, p.host_port, p.guest_port
    ))
}

/// Listen for VM `rec`'s mappings if it runs, close them otherwise. A host port that
/// cannot be bound is logged and skipped (the others still work).
pub fn sync(app: &App, rec: &VmRecord) {
    sync_parts(app, rec.name.as_str(), &rec.id, rec.ip, rec.state);
}

/// [`sync`] for the VM a call just returned.
pub fn sync_info(app: &App, info: &VmInfo) {
    sync_parts(app, info.name.as_str(), &info.id, info.ip, info.state);
}

fn sync_parts(app: &App, name: &str, id: &str, ip: Ipv4Addr, state: VmState) {
    let current = app.forwards.take(name);
    let wanted = if state == VmState::Running && app.rootless.is_none() {
        load(app, id)
    } else {
        vec![]
    };
    // Listeners that stay keep running: closing one is asynchronous (the task is
    // aborted at its next poll), so closing and re-binding the same port would race.
    let mut kept = vec![];
    for l in current {
        if l.guest_ip == ip && wanted.contains(&l.forward) {
            kept.push(l);
        } else {
            l.task.abort();
        }
    }
    for p in wanted {
        if kept.iter().any(|l| l.forward == p) {
            continue;
        }
        match listen(&p) {
            Ok(l) => {
                let to = SocketAddrV4::new(ip, p.guest_port);
                kept.push(Listening {
                    forward: p,
                    guest_ip: ip,
                    task: tokio::spawn(relay(l, to)).abort_handle(),
                });
                tracing::info!(vm = %name, "publishing {p}");
            }
            Err(e) => tracing::warn!(vm = %name, "cannot publish {p}: {e}"),
        }
    }
    app.forwards.put(name, kept);
}

/// Close VM `name`'s listeners (it stopped or is gone).
pub fn close(app: &App, name: &str) {
    for l in app.forwards.take(name) {
        l.task.abort();
    }
}

fn listen(p: &PortForward) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind((p.host_ip, p.host_port))?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// Accept forever; relay each connection to `to` in its own task.
async fn relay(l: tokio::net::TcpListener, to: SocketAddrV4) {
    loop {
        let mut inbound = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting on {:?}: {e}", l.local_addr());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let out = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(to));
            match out.await {
                Ok(Ok(mut out)) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
                Ok(Err(e)) => tracing::debug!("relaying to {to}: {e}"),
                Err(_) => tracing::debug!("relaying to {to}: the guest did not answer"),
            }
        });
    }
}

/// `vm.port_forward`: add (or remove) one mapping of a VM, running or not.
pub async fn port_forward(app: &App, p: PortForwardParams) -> Result<VmInfo> {
    let lock = app.vm_lock(&p.name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    let mut ports = load(app, &rec.id);
    let f = p.forward;
    let same = |x: &PortForward| x.host_ip == f.host_ip && x.host_port == f.host_port;
    if p.remove {
        let before = ports.len();
        ports.retain(|x| !same(x));
        if ports.len() == before {
            return Err(DaemonError::NotFound(format!(
                "VM {} does not publish host port {}:{} (see banger vm ports {})",
                rec.name, f.host_ip, f.host_port, rec.name
            )));
        }
    } else {
        check_new(&[f], &ports)?;
        ports.push(f);
    }
    if app.rootless.is_some() && rec.state == VmState::Running {
        return Err(DaemonError::BadRequest(format!(
            "VM {n} runs rootless: its network stack listens for its published ports from \
             its start and cannot change them while it runs; stop it (banger vm stop {n}), \
             change the port, then start it again",
            n = rec.name
        )));
    }
    save(app, &rec.id, &ports)?;
    sync(app, &rec);
    Ok(super::query::info_for(app, &rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(port: u16) -> PortForward {
        PortForward {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: port,
            guest_port: 80,
        }
    }

    #[test]
    fn a_taken_or_repeated_host_port_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = check_new(&[fwd(port)], &[]).unwrap_err().to_string();
        assert!(e.contains("pick another host port"), "{e}");
        drop(taken);
        check_new(&[fwd(port)], &[]).unwrap();
        assert!(check_new(&[fwd(port)], &[fwd(port)]).is_err());
        assert!(check_new(&[fwd(port), fwd(port)], &[]).is_err());
    }

    #[tokio::test]
    async fn connections_are_relayed_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let guest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = match guest.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        tokio::spawn(async move {
            let (mut s, _) = guest.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[buf.as_slice(), b" back"].concat())
                .await
                .unwrap();
        });
        let l = listen(&fwd(0)).unwrap();
        let front = l.local_addr().unwrap();
        let task = tokio::spawn(relay(l, to));
        let mut c = tokio::net::TcpStream::connect(front).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello back");
        task.abort();
    }
}
