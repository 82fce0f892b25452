//! banger's DNS responder.
//!
//! One small server with two jobs:
//! * **authoritative for the `vm.` zone**: `<name>.vm` answers with the address of the
//!   running VM of that name; anything else under `vm.` is NXDOMAIN with the AA flag, so
//!   resolvers (systemd-resolved, glibc) stop there instead of asking the internet;
//! * on the guests' listener (the bridge address) a **bounded forwarder** for every
//!   other name, to the host's real upstream resolvers. Guests cannot use the host's
//!   loopback stub (`127.0.0.53`), so without this they would have no DNS on exactly
//!   the hosts that run systemd-resolved.
//!
//! The wire format is hickory-proto's; the server loop is ours. hickory-server would
//! give us a catalog, but its API churns between minors and we want hard bounds that
//! are easy to see: a cap on forwards in flight, on TCP connections, on message sizes
//! and on every wait. Replies carry our own EDNS OPT record (never an echo of the
//! client's options), which systemd-resolved has been known to insist on.

mod answer;
mod names;
mod server;
mod upstream;

pub use answer::{respond, Reply, TTL, ZONE};
pub use names::Names;
pub use server::{serve_tcp, serve_udp, Limits, Responder};
pub use upstream::{parse_resolv_conf, system_upstreams, upstreams_from_files};
