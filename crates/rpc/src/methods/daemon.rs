//! Methods about the daemon itself: liveness and the operations in flight.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};

method!(
    /// `ping`: liveness and version check.
    Ping = "ping", NoParams => PingResult
);
method!(
    /// `operations.list`: calls in flight, oldest first.
    OperationsList = "operations.list", NoParams => Vec<OperationInfo>
);

/// Reply to `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    /// The daemon's version (crate version), so the CLI can warn on mismatch.
    pub version: String,
    /// The daemon's pid, for `banger daemon status` and debugging.
    pub pid: u32,
}

/// One call in flight on the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationInfo {
    /// The operation id (grep the daemon log for it).
    pub op_id: String,
    /// RPC method.
    pub method: String,
    /// What it acts on (VM or image name).
    pub target: String,
    /// The stage it has reached.
    pub stage: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
}
