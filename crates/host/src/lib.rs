//! Host network plumbing for banger: the bridge every guest hangs off, one persistent
//! tap per VM, the nftables tables that NAT and isolate guest traffic, and the
//! systemd-resolved link settings that send `.vm` lookups to banger.
//!
//! Everything here needs root (CAP_NET_ADMIN). The daemon never calls it directly: it
//! goes through `banger-helper`, which validates each request first.
//!
//! Every operation does its privileged work (opening netlink sockets, tun ioctls,
//! spawning `nft`, writing sysctls) on the *calling thread*, never on a blocking pool.
//! Network namespaces are per-thread, so this is what lets a caller (and the tests)
//! run the whole crate inside a namespace it created with `unshare(CLONE_NEWNET)`.
//! The async functions need a tokio runtime, because the netlink connection is driven
//! by a spawned task.

mod bridge;
mod dns_socket;
mod error;
mod isolation;
mod names;
mod nat;
mod netlink;
mod resolved;
mod routes;
mod tap;

pub use bridge::{bridge_mac, delete_bridge, ensure_bridge};
pub use dns_socket::{dns_socket, DnsProto};
pub use error::NetError;
pub use isolation::{
    default_nft, disable_guard, enable_guard, guard_ruleset, isolate_tap, release_tap, tap_ruleset,
    untap_ruleset, IsolationError, BRIDGE_TABLE, GUARD_TABLE,
};
pub use names::{tap_name, validate_ifname, IFNAMSIZ_MAX};
pub use nat::{
    disable_nat, disable_nat_with, enable_nat, enable_nat_with, nat_ruleset, NatError, NAT_TABLE,
};
pub use netlink::{delete_link, link_exists, link_state, LinkState};
pub use resolved::{
    link_commands, LinkDns, Resolved, ResolvedError, RESOLVECTL, RESOLVED_RUNTIME, ROUTING_DOMAIN,
};
pub use routes::{ipv4_addresses, ipv4_routes, Addr4, Route4};
pub use tap::{create_tap, open_tap};
