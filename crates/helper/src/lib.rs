//! The typed privileged interface of banger, and the root helper that serves it.
//!
//! The daemon never performs root-only host operations itself: it builds a [`PrivOp`]
//! and hands it to a [`Privileged`] implementation. Every implementation validates
//! the operation before acting, so a compromised or buggy daemon can only ask for
//! banger-shaped things (its own taps, a bridge on a private subnet), never
//! arbitrary network changes.
//!
//! - [`InProcess`] runs the operations in the daemon's own process, for a root daemon.
//! - [`HelperClient`] sends them to `banger-helper` (this crate's binary, see
//!   [`server`]) over its unix socket. The helper adds what a compromised owner
//!   daemon must not get: the bridge and subnet come from its root-owned config
//!   ([`config`]), a subnet that overlaps a host route or address is refused, taps
//!   belong to the caller SO_PEERCRED names, and the helper only touches links it
//!   recorded making ([`records`]). It also passes tap descriptors
//!   ([`Privileged::open_tap`]) and launches Firecracker through its jailer ([`jail`]).
//!
//! The wire format is in [`wire`]; `BANGER_HELPER_SOCKET` ([`HELPER_SOCKET_ENV`]) is
//! how the owner daemon learns the helper's socket.

pub mod client;
pub mod config;
mod error;
mod in_process;
pub mod jail;
pub mod jailed;
mod op;
pub mod records;
pub mod server;
pub mod tools;
mod unprivileged;
mod validate;
pub mod wire;

pub use client::{HelperClient, HELPER_SOCKET_ENV};
pub use config::HelperConfig;
pub use error::HelperError;
pub use in_process::InProcess;
pub use jailed::JailedFirecracker;
pub use op::PrivOp;
pub use unprivileged::Unprivileged;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;

pub use banger_host::DnsProto;

/// Something that can carry out privileged operations.
///
/// Object safe (through `async_trait`) so the daemon can hold an
/// `Arc<dyn Privileged>` and not care whether it is root itself or talks to the
/// helper.
#[async_trait::async_trait]
pub trait Privileged: Send + Sync {
    /// Validate `op` and carry it out. Implementations must refuse anything
    /// [`PrivOp::validate`] refuses.
    async fn run(&self, op: PrivOp) -> Result<(), HelperError>;

    /// Open banger's tap `name` (TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, as
    /// QEMU's `-netdev tap,ifname=` would) and return the queue's descriptor
    /// (close-on-exec), for a VMM that cannot open `/dev/net/tun` itself: hand it
    /// over as `-netdev tap,fd=N`. Fails while another process holds the tap.
    async fn open_tap(&self, name: &str) -> Result<OwnedFd, HelperError>;

    /// A socket for the guests' DNS responder on `gateway` port 53 (privileged: the
    /// helper binds it and passes the descriptor), `IP_FREEBIND` so it may come
    /// before the bridge; a TCP one already listens. The default binds in this
    /// process, which is what a root daemon (and a test on a free port) does.
    async fn bind_dns(&self, gateway: Ipv4Addr, proto: DnsProto) -> Result<OwnedFd, HelperError> {
        let addr = SocketAddr::from((gateway, 53));
        banger_host::dns_socket(addr, proto, true).map_err(|source| HelperError::DnsBind {
            addr,
            proto,
            source,
        })
    }

    /// The names of the taps this caller owns, so a restarted daemon can remove those
    /// of VMs that are gone. Only the helper keeps a record of the taps it made;
    /// elsewhere this is [`HelperError::NeedsHelper`] and the daemon falls back to the
    /// taps its own records name.
    async fn list_tap_names(&self) -> Result<Vec<String>, HelperError> {
        Err(HelperError::NeedsHelper("listing banger's taps"))
    }

    /// Whether operations can be carried out at all, so a caller can refuse a request
    /// before it creates anything (an unprivileged daemon without a helper cannot).
    fn available(&self) -> Result<(), HelperError> {
        Ok(())
    }
}
