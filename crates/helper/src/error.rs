//! Why a privileged operation was refused or failed.

use std::net::Ipv4Addr;

use banger_model::Subnet;

/// Why a privileged operation was refused (validation) or failed (on the host).
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The bridge name is not one banger may manage.
    #[error("bridge name {0:?} refused: it must match ^[a-z][a-z0-9-]{{0,14}}$ (e.g. banger0); fix the bridge setting in the config")]
    BadBridgeName(String),
    /// The tap name is not one of banger's own taps.
    #[error("tap name {0:?} refused: banger only touches its own taps, named bgr followed by 1 to 12 lowercase hex digits")]
    BadTapName(String),
    /// An address or subnet lies outside the RFC 1918 private ranges.
    #[error("{what} {addr} refused: it is not inside an RFC 1918 private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16); configure a private subnet such as 172.30.0.0/24")]
    NotPrivate {
        /// Which field, e.g. "gateway".
        what: &'static str,
        /// The refused address.
        addr: Ipv4Addr,
    },
    /// The prefix length is outside what banger supports.
    #[error("prefix /{0} refused: banger's subnets must be /16 to /29")]
    BadPrefix(u8),
    /// The gateway is the network or broadcast address of its own subnet.
    #[error("gateway {0}/{1} refused: it is the network or broadcast address; use the first host address (e.g. 172.30.0.1/24)")]
    NotHostAddress(Ipv4Addr, u8),
    /// The subnet has bits set beyond its prefix.
    #[error(
        "subnet {0} refused: host bits are set; give the network address (e.g. 172.30.0.0/24)"
    )]
    HostBitsSet(Subnet),
    /// The uid the tap would be given is not a plausible user.
    #[error("tap owner uid {0} refused: not a real user id (negative, overflow or nobody); pass the uid the VMM runs as, or none")]
    BadOwnerUid(u32),
    /// Creating, deleting or inspecting a link failed on the host.
    #[error(transparent)]
    Host(#[from] banger_host::NetError),
    /// Setting up or removing NAT failed on the host.
    #[error(transparent)]
    Nat(#[from] banger_host::NatError),
}
