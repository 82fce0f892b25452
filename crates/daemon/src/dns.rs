//! The daemon's DNS: `<vm>.vm` for every running VM, on two listeners.
//!
//! * **host** (`BANGER_DNS`, default `127.0.0.1:42069`): authoritative for `vm.`,
//!   everything else refused (it must not become an open resolver). `dig @127.0.0.1
//!   -p 42069 dev.vm`, dnsmasq's `server=/vm/127.0.0.1#42069`, or systemd-resolved
//!   through the bridge link (see `banger_host::resolved`) reach it.
//! * **guests** (the gateway address, port 53, UDP and TCP): the same names, and every
//!   other name forwarded to the host's real upstream resolvers
//!   (`banger_dns::upstreams_from_files` over `BANGER_RESOLV_CONF`), so guests have
//!   working DNS even on hosts whose resolv.conf names a loopback stub. Guests get it
//!   as `banger.dns=<gateway>` on their kernel command line. Port 53 is privileged,
//!   so the sockets come from [`Privileged::bind_dns`]: the root helper binds them and
//!   passes the descriptors (SCM_RIGHTS) to the owner daemon; a root daemon binds
//!   them itself. Bound with `IP_FREEBIND`, so they can be bound before the bridge
//!   (and its address) exists, and keep working when the bridge is deleted and made
//!   again.
//!
//! The names table is written as VMs change state: set when a start succeeds or a
//! running VM is re-adopted, removed in the runtime teardown every stop, kill, delete
//! and the monitor go through, so a deleted VM stops resolving at once.

use banger_dns::{serve_tcp, serve_udp, Limits, Names, Responder};
use banger_helper::{DnsProto, HelperError, Privileged};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One listener's state, for `banger network show`.
#[derive(Debug, Clone, Default)]
pub enum Listener {
    /// Not asked for (`BANGER_DNS=off`) or not tried yet.
    #[default]
    Off,
    /// Serving UDP and TCP at this address.
    Serving(SocketAddr),
    /// Binding failed; why.
    Failed(String),
}

impl Listener {
    /// `127.0.0.1:42069`, `off` or `failed: why`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Off => "off".into(),
            Listener::Serving(a) => a.to_string(),
            Listener::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// The DNS service: the names, both responders and their listeners.
pub struct Dns {
    /// `<name>.vm` → address, for running VMs.
    pub names: Arc<Names>,
    host: Arc<Responder>,
    guests: Arc<Responder>,
    state: Mutex<(Listener, Listener)>,
    resolv_conf: Vec<PathBuf>,
    guests_enabled: bool,
    stop: CancellationToken,
}

impl Dns {
    /// The service with no listener yet; `resolv_conf` names where the guests'
    /// upstreams are read from; without `guests` no guest listener is ever made.
    pub fn new(resolv_conf: Vec<PathBuf>, guests: bool) -> Self {
        let names = Arc::new(Names::new());
        let upstreams = banger_dns::upstreams_from_files(&resolv_conf);
        Self {
            host: Arc::new(Responder::new(
                Arc::clone(&names),
                false,
                vec![],
                Limits::default(),
            )),
            guests: Arc::new(Responder::new(
                Arc::clone(&names),
                true,
                upstreams,
                Limits::default(),
            )),
            names,
            state: Mutex::new((Listener::Off, Listener::Off)),
            resolv_conf,
            guests_enabled: guests,
            stop: CancellationToken::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Listener, Listener)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host listener's state.
    pub fn host_listener(&self) -> Listener {
        self.state().0.clone()
    }

    /// The guests' listener's state.
    pub fn guest_listener(&self) -> Listener {
        self.state().1.clone()
    }

    /// Where names outside `vm.` go.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.guests.upstreams()
    }

    /// Re-read the host's upstream resolvers (once per VM start: a laptop's change
    /// with the network it is on).
    pub fn refresh_upstreams(&self) {
        let now = banger_dns::upstreams_from_files(&self.resolv_conf);
        if now != self.guests.upstreams() {
            tracing::info!(upstreams = ?now, "guest DNS forwards to new upstreams");
            self.guests.set_upstreams(now);
        }
    }

    /// Serve the host listener at `addr`. A failure (the port is taken) is logged and
    /// kept for `banger network show`: VMs still work, only host lookups do not.
    pub fn start_host(&self, addr: Option<SocketAddr>) {
        let Some(addr) = addr else {
            return;
        };
        let bound = (|| {
            Ok::<_, std::io::Error>((
                banger_host::dns_socket(addr, DnsProto::Udp, false)?,
                banger_host::dns_socket(addr, DnsProto::Tcp, false)?,
            ))
        })()
        .map_err(|e| e.to_string());
        let got = self.spawn(addr, Arc::clone(&self.host), bound);
        if let Listener::Failed(why) = &got {
            tracing::warn!(%addr, "the host's .vm DNS listener could not start: {why}");
        } else {
            tracing::info!(%addr, "serving <vm>.vm to the host");
        }
        self.state().0 = got;
    }

    /// Make sure the guests' listener serves on `gateway:53`, with sockets from
    /// `privileged`; a no-op once it does. Returns whether it does.
    pub async fn ensure_guests(&self, privileged: &dyn Privileged, gateway: Ipv4Addr) -> bool {
        if !self.guests_enabled {
            return false;
        }
        let addr = SocketAddr::new(IpAddr::V4(gateway), 53);
        if matches!(self.guest_listener(), Listener::Serving(a) if a == addr) {
            return true;
        }
        let bound = async {
            Ok::<_, HelperError>((
                privileged.bind_dns(gateway, DnsProto::Udp).await?,
                privileged.bind_dns(gateway, DnsProto::Tcp).await?,
            ))
        }
        .await
        .map_err(|e| e.to_string());
        let got = self.spawn(addr, Arc::clone(&self.guests), bound);
        let ok = matches!(got, Listener::Serving(_));
        match &got {
            Listener::Failed(why) => {
                tracing::warn!(%addr, "the guests' DNS listener could not start: {why}; guests get the host's upstream resolvers directly and no <vm>.vm names")
            }
            _ => {
                tracing::info!(%addr, upstreams = ?self.upstreams(), "serving DNS to guests")
            }
        }
        self.state().1 = got;
        ok
    }

    /// The `banger.dns` servers for a guest booting now: the gateway when the guests'
    /// listener serves, else the host's upstreams themselves (reached through NAT,
    /// without `.vm` names), never a loopback address a guest cannot reach.
    pub async fn servers_for_guests(
        &self,
        privileged: &dyn Privileged,
        gateway: Ipv4Addr,
    ) -> Vec<IpAddr> {
        if self.ensure_guests(privileged, gateway).await {
            return vec![IpAddr::V4(gateway)];
        }
        self.upstreams()
            .into_iter()
            .map(|s| s.ip())
            .filter(|ip| !ip.is_loopback() && ip.is_ipv4())
            .collect()
    }

    /// Serve the bound UDP and TCP sockets for `addr` until the daemon stops.
    fn spawn(
        &self,
        addr: SocketAddr,
        r: Arc<Responder>,
        bound: Result<(OwnedFd, OwnedFd), String>,
    ) -> Listener {
        let (udp, tcp) = match bound.and_then(|(u, t)| to_tokio(u, t).map_err(|e| e.to_string())) {
            Ok(pair) => pair,
            Err(e) => return Listener::Failed(e),
        };
        tokio::spawn(serve_udp(udp, Arc::clone(&r), self.stop.clone()));
        tokio::spawn(serve_tcp(tcp, r, self.stop.clone()));
        Listener::Serving(addr)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The bound sockets as tokio's (non-blocking whoever bound them: a descriptor
/// passed by the helper keeps the flags it was made with, set here again anyway).
fn to_tokio(
    udp: OwnedFd,
    tcp: OwnedFd,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = std::net::UdpSocket::from(udp);
    udp.set_nonblocking(true)?;
    let tcp = std::net::TcpListener::from(tcp);
    tcp.set_nonblocking(true)?;
    Ok((
        tokio::net::UdpSocket::from_std(udp)?,
        tokio::net::TcpListener::from_std(tcp)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_serve_or_say_why_not() {
        let dns = Dns::new(vec![], false);
        assert_eq!(dns.host_listener().describe(), "off");
        dns.start_host(Some("127.0.0.1:0".parse().unwrap()));
        assert!(matches!(dns.host_listener(), Listener::Serving(_)));
        // A port another program listens on (TCP) is reported, not fatal.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = Dns::new(vec![], false);
        other.start_host(Some(taken.local_addr().unwrap()));
        assert!(
            matches!(other.host_listener(), Listener::Failed(ref why) if why.contains("in use")),
            "{}",
            other.host_listener().describe()
        );
    }

    #[tokio::test]
    async fn guests_fall_back_to_real_upstreams_never_loopback() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("resolv.conf");
        std::fs::write(&f, "nameserver 198.18.0.1\n").unwrap();
        let dns = Dns::new(vec![f.clone()], false);
        assert_eq!(dns.upstreams(), vec!["198.18.0.1:53".parse().unwrap()]);
        let gw = Ipv4Addr::new(172, 30, 0, 1);
        assert_eq!(
            dns.servers_for_guests(&banger_helper::InProcess::default(), gw)
                .await,
            vec![IpAddr::from([198, 18, 0, 1])]
        );
        std::fs::write(&f, "nameserver 127.0.0.53\n").unwrap();
        dns.refresh_upstreams();
        assert_eq!(dns.upstreams(), vec!["127.0.0.53:53".parse().unwrap()]);
        assert!(
            dns.servers_for_guests(&banger_helper::InProcess::default(), gw)
                .await
                .is_empty(),
            "never a loopback stub"
        );
    }
}
