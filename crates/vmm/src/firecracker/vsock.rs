//! `PUT /vsock`: the virtio-vsock device and its host-side unix socket.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Guest CID banger gives every VM. Firecracker's vsock has no host-wide CID space
/// (the host end is a per-VM unix socket), so all guests can share the first CID
/// that is not reserved (0, 1 and 2 are).
pub const GUEST_CID: u32 = 3;

/// Body of `PUT /vsock` (`Vsock`).
///
/// Host-initiated connections go through `uds_path` with a `CONNECT <port>\n`
/// handshake (see `banger_guest::vsock`); guest-initiated ones reach
/// `<uds_path>_<port>` if something listens there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest context id (3 or more).
    pub guest_cid: u32,
    /// Host unix socket Firecracker binds for host-initiated connections.
    pub uds_path: PathBuf,
}
