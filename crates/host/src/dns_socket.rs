//! The sockets of banger's guest DNS responder (the bridge gateway, port 53).
//!
//! Port 53 is privileged, so an owner daemon cannot bind it; the root helper binds it
//! with [`dns_socket`] and passes the descriptor (SCM_RIGHTS), and a root daemon
//! binds it itself with the same function. `IP_FREEBIND` lets the address be bound
//! before the bridge (and its address) exists, and the socket keeps working when the
//! bridge is deleted and made again.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use serde::{Deserialize, Serialize};

/// The transport of a DNS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsProto {
    /// A UDP socket, bound.
    Udp,
    /// A TCP socket, bound and listening.
    Tcp,
}

/// How many TCP connections may wait to be accepted.
const BACKLOG: i32 = 64;

/// A socket of `proto` bound at `addr` (and listening, for TCP), non-blocking and
/// close-on-exec, with `SO_REUSEADDR` and, when `freebind`, `IP_FREEBIND`.
pub fn dns_socket(addr: SocketAddr, proto: DnsProto, freebind: bool) -> std::io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let kind = match proto {
        DnsProto::Udp => SockType::Datagram,
        DnsProto::Tcp => SockType::Stream,
    };
    let fd = socket(
        family,
        kind,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if freebind {
        setsockopt(&fd, sockopt::IpFreebind, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if proto == DnsProto::Tcp {
        listen(&fd, Backlog::new(BACKLOG)?)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_binds_and_tcp_listens() {
        let u = dns_socket("127.0.0.1:0".parse().unwrap(), DnsProto::Udp, false).unwrap();
        let u = std::net::UdpSocket::from(u);
        assert!(u.local_addr().unwrap().port() > 0);
        let t = dns_socket("127.0.0.1:0".parse().unwrap(), DnsProto::Tcp, false).unwrap();
        let t = std::net::TcpListener::from(t);
        let addr = t.local_addr().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_ok(), "listening");
        // FREEBIND: an address this host does not have.
        let f = dns_socket("198.18.7.1:0".parse().unwrap(), DnsProto::Udp, true);
        assert!(f.is_ok(), "{f:?}");
    }
}
