//! `events.watch`: a stream of VM state changes, so scripts wait instead of polling.
//!
//! The daemon answers with [`WatchResult`], then the connection carries one JSON
//! object per line ([`VmEvent`]) for as long as the client keeps it open. Events are
//! sent as they happen; a client that reads too slowly misses events and is told so
//! by a [`VmEvent`] whose `state` is `lagged` (then it should re-read `vm.list`).

use super::{method, NoParams};
use serde::{Deserialize, Serialize};

method!(
    /// `events.watch`: after the result line the connection carries [`VmEvent`]
    /// lines until either side closes it.
    EventsWatch = "events.watch", NoParams => WatchResult
);

/// Result of `events.watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResult {
    /// Always true: event lines follow.
    pub watching: bool,
}

/// Longest event line a client accepts (a VM name, an error message and a few fields).
pub const MAX_EVENT_LINE: usize = 64 * 1024;

/// One VM state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    /// When it happened, Unix milliseconds.
    pub at_ms: u64,
    /// The VM's name (empty for `lagged`).
    pub vm: String,
    /// The VM's id (empty for `lagged`).
    pub id: String,
    /// `creating`, `running`, `stopped`, `error`, `deleted`, or `lagged` (this
    /// client missed events).
    pub state: String,
    /// Why, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
