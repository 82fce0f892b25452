//! Why a privileged operation was refused or failed.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use banger_model::Subnet;

/// Why a privileged operation was refused (validation, policy) or failed (on the host,
/// or talking to the helper).
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
    /// The list of host ports guests may reach is unusable.
    #[error("host ports [{0}] refused: give at most 64 TCP ports, none of them 0 (BANGER_GUEST_HOST_PORTS)")]
    BadPorts(String),
    /// The guest address is not a guest address of the helper's subnet.
    #[error("guest address {0} refused: it is not a guest address of this helper's subnet {1}")]
    NotGuestAddress(Ipv4Addr, Subnet),
    /// The uid the tap would be given is not a plausible user.
    #[error("tap owner uid {0} refused: not a real user id (negative, overflow or nobody); pass the uid the VMM runs as, or none")]
    BadOwnerUid(u32),
    /// The request names a bridge or subnet other than the helper's configured one.
    #[error("{what} {asked} refused: this helper serves {what} {configured} (from its config, /etc/banger/helper.toml); point the daemon at the same {what}, or change the helper's config and restart it")]
    NotConfigured {
        /// "bridge", "gateway" or "subnet".
        what: &'static str,
        /// What the request named.
        asked: String,
        /// What the config says.
        configured: String,
    },
    /// A bridge of the configured name exists and banger did not make it.
    #[error("bridge {0} exists but banger did not create it (another program's bridge, such as Docker's docker0); the helper will not take it over: set another bridge name in /etc/banger/helper.toml, or remove it (ip link del {0}) if it is a leftover")]
    ForeignBridge(String),
    /// The guest subnet overlaps a network the host already uses.
    #[error("guest subnet {subnet} overlaps {with}; the helper will not shadow a network this host uses: choose a free private subnet in /etc/banger/helper.toml (subnet = ...) and restart the helper")]
    SubnetOverlap {
        /// The configured guest subnet.
        subnet: Subnet,
        /// What it overlaps, e.g. "the route 172.30.0.0/16 (table 254)".
        with: String,
    },
    /// A link of that name exists and the helper did not make it.
    #[error("link {0} was not created by the banger helper (it has no record of it); the helper only touches links it made: remove it yourself (ip link del {0}) if it is a leftover")]
    NotOurLink(String),
    /// The link the request names is not a tap.
    #[error("link {0} is not a tap device; the helper only creates, opens and deletes taps")]
    NotATap(String),
    /// The tap belongs to another user.
    #[error("tap {name} belongs to uid {owner}, not to the caller (uid {caller}); only its owner or root may use it")]
    NotYours {
        /// The tap.
        name: String,
        /// Its recorded owner.
        owner: u32,
        /// Who asked.
        caller: u32,
    },
    /// A non-root caller asked for a tap owned by someone else.
    #[error("tap owner uid {asked} refused: the helper gives taps to the calling user (uid {caller}); leave owner_uid out")]
    OwnerNotCaller {
        /// The uid the request named.
        asked: u32,
        /// The caller's uid (SO_PEERCRED).
        caller: u32,
    },
    /// The connecting process is neither root nor the configured owner.
    #[error("uid {uid} may not use the banger helper: it serves only root and uid {owner} (owner_uid in /etc/banger/helper.toml); run banger as that user, or reinstall for yours with `sudo banger system install --owner USER`")]
    Unauthorized {
        /// The caller's uid.
        uid: u32,
        /// The configured owner.
        owner: u32,
    },
    /// The request line is not a valid request.
    #[error("not a banger helper request: {0}")]
    BadRequest(String),
    /// The request line is longer than the helper reads.
    #[error("request line longer than {0} bytes refused; the helper closed the connection")]
    TooLong(usize),
    /// The operation needs the separate helper (jailed Firecracker, tap records).
    #[error("{0} is only available through the root helper (banger-helper); install it with `sudo banger system install`, or run `banger system run --owner USER` as root")]
    NeedsHelper(&'static str),
    /// The daemon is not root and has no helper: nothing privileged can be done.
    #[error("bangerd runs as uid {uid}, not root, and no banger root helper is configured (BANGER_HELPER_SOCKET unset, no {}), so it cannot create the bridge and taps VMs need; install banger as a system service with `sudo banger system install` (where systemd is not PID 1: `sudo banger system run --owner USER`), or run banger as root for a quick trial", system_socket.display())]
    NoPrivilege {
        /// The daemon's uid.
        uid: u32,
        /// Where the system helper's socket would be.
        system_socket: PathBuf,
    },
    /// Binding the guests' DNS socket failed.
    #[error("binding banger's guest DNS socket on {addr} ({proto:?}): {source}; another DNS server (dnsmasq, a second banger) may hold port 53 on that address: stop it, or set BANGER_GUEST_DNS=off")]
    DnsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// UDP or TCP.
        proto: banger_host::DnsProto,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An external tool is missing from the config or not safe to run as root.
    #[error("{what} {path} refused: {reason}; install it root-owned and not writable by group or others, and give its absolute path in /etc/banger/helper.toml")]
    Tool {
        /// Which tool ("jailer", "firecracker", "nft").
        what: &'static str,
        /// Its configured path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The helper's record of its links could not be read or written.
    #[error("the helper's link record {path}: {source}; check that its runtime directory is root-owned and writable")]
    Records {
        /// The record file.
        path: PathBuf,
        /// The OS or parse error.
        source: std::io::Error,
    },
    /// A jailed Firecracker launch or cleanup was refused or failed.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// The helper socket did not answer.
    #[error("the banger root helper is not answering on {socket}: {source}; start it (`sudo systemctl start bangerd-root`, or `sudo banger system run --owner USER`)")]
    Unreachable {
        /// The helper socket.
        socket: PathBuf,
        /// The connect or I/O error.
        source: std::io::Error,
    },
    /// The helper answered something that is not a reply.
    #[error("the banger root helper sent an unreadable reply: {0}; are the helper and the daemon the same banger version? (banger system status)")]
    Protocol(String),
    /// The helper refused or failed; its own message, which names the fix.
    #[error("{message}")]
    Remote {
        /// Stable error kind (see [`HelperError::kind`]).
        kind: String,
        /// The helper's message.
        message: String,
    },
    /// Creating, deleting or inspecting a link failed on the host.
    #[error(transparent)]
    Host(#[from] banger_host::NetError),
    /// Setting up or removing NAT failed on the host.
    #[error(transparent)]
    Nat(#[from] banger_host::NatError),
    /// Setting up or removing guest isolation failed on the host.
    #[error(transparent)]
    Isolation(Box<banger_host::IsolationError>),
    /// systemd-resolved could not be told about the bridge.
    #[error(transparent)]
    Resolved(Box<banger_host::ResolvedError>),
}

impl From<banger_host::IsolationError> for HelperError {
    fn from(e: banger_host::IsolationError) -> Self {
        HelperError::Isolation(Box::new(e))
    }
}

impl From<banger_host::ResolvedError> for HelperError {
    fn from(e: banger_host::ResolvedError) -> Self {
        HelperError::Resolved(Box::new(e))
    }
}

impl HelperError {
    /// A short stable name for the error, carried on the wire so callers (and tests)
    /// can tell refusals apart without parsing messages.
    pub fn kind(&self) -> &str {
        match self {
            HelperError::BadBridgeName(_) => "bad_bridge_name",
            HelperError::BadTapName(_) => "bad_tap_name",
            HelperError::NotPrivate { .. } => "not_private",
            HelperError::BadPrefix(_) => "bad_prefix",
            HelperError::NotHostAddress(..) => "not_host_address",
            HelperError::HostBitsSet(_) => "host_bits_set",
            HelperError::BadOwnerUid(_) => "bad_owner_uid",
            HelperError::NotConfigured { .. } => "not_configured",
            HelperError::ForeignBridge(_) => "foreign_bridge",
            HelperError::SubnetOverlap { .. } => "subnet_overlap",
            HelperError::NotOurLink(_) => "not_our_link",
            HelperError::NotATap(_) => "not_a_tap",
            HelperError::NotYours { .. } => "not_yours",
            HelperError::OwnerNotCaller { .. } => "owner_not_caller",
            HelperError::Unauthorized { .. } => "unauthorized",
            HelperError::BadRequest(_) => "bad_request",
            HelperError::TooLong(_) => "too_long",
            HelperError::NeedsHelper(_) => "needs_helper",
            HelperError::NoPrivilege { .. } => "no_privilege",
            HelperError::DnsBind { .. } => "dns_bind",
            HelperError::Tool { .. } => "tool",
            HelperError::Records { .. } => "records",
            HelperError::Jail(_) => "jail",
            HelperError::Unreachable { .. } => "unreachable",
            HelperError::Protocol(_) => "protocol",
            HelperError::Remote { kind, .. } => kind,
            HelperError::Host(_) => "host",
            HelperError::Nat(_) => "nat",
            HelperError::Isolation(_) => "isolation",
            HelperError::Resolved(_) => "resolved",
            HelperError::BadPorts(_) => "bad_ports",
            HelperError::NotGuestAddress(..) => "not_guest_address",
        }
    }
}
