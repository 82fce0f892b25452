//! `vm.events`: VM state changes as they happen, by long poll.
//!
//! Why a long poll and not a never-ending call: a handler runs in its own task and
//! outlives its client (so a disconnect cannot cancel a lifecycle step half-way), and
//! the daemon waits for in-flight calls when it stops. A call that returns within
//! [`MAX_EVENTS_WAIT_MS`] keeps both properties; `banger events` and `vm wait` loop
//! over it, passing the last `seq` they saw, and miss nothing the daemon still holds.

use super::method;
use serde::{Deserialize, Serialize};

method!(
    /// `vm.events`: state changes after a sequence number, waiting for one if none.
    VmEvents = "vm.events", VmEventsParams => VmEventsResult
);

/// The longest a `vm.events` call waits for a first event.
pub const MAX_EVENTS_WAIT_MS: u64 = 5_000;

/// Params of `vm.events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEventsParams {
    /// Return events with a larger `seq`; `None` means "from now on" (nothing
    /// already past is returned, only what happens during the wait).
    #[serde(default)]
    pub after: Option<u64>,
    /// How long to wait for a first event, in ms (capped at [`MAX_EVENTS_WAIT_MS`]);
    /// 0 answers at once.
    #[serde(default)]
    pub wait_ms: u64,
}

/// Result of `vm.events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEventsResult {
    /// The events, oldest first.
    pub events: Vec<VmEvent>,
    /// Pass as `after` next time.
    pub next: u64,
    /// Whether events between `after` and the first returned one were dropped (the
    /// daemon keeps the last few thousand; a slow reader should re-read state).
    #[serde(default)]
    pub lost: bool,
}

/// One change of a VM's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    /// Increasing per daemon run (restarts from 1 when the daemon restarts).
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// The VM's name.
    pub vm: String,
    /// The VM's id.
    pub id: String,
    /// The new state: `creating`, `running`, `stopped`, `error`, or `deleted`.
    pub state: String,
    /// Why, for `error`.
    #[serde(default)]
    pub error: Option<String>,
}
