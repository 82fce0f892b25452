//! What one client may cost the daemon: connections, time to send a request, time
//! to take a reply, and which operation ids are in use.
//!
//! Local clients are not trusted to behave: a script that opens connections in a
//! loop, one that sends half a line and waits, or one that never reads its replies
//! must not exhaust the daemon's descriptors, pin its tasks, or block its shutdown.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Bounds for [`super::serve_with_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Connections served at once; further ones get one error line and are closed.
    pub max_connections: usize,
    /// How long the server waits for a complete request line (idle connections and
    /// partial lines alike) before closing the connection.
    pub read_timeout: Duration,
    /// How long one reply, progress or error line may take to be written; a client
    /// that does not read is disconnected after this (its call keeps running).
    pub write_timeout: Duration,
}

impl Default for ServeOptions {
    /// 128 connections (the CLI uses one per command), 60 s to send a request
    /// (the CLI sends it right after connecting), 30 s to take a line.
    fn default() -> Self {
        ServeOptions {
            max_connections: 128,
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The operation ids of calls in progress, across all connections. A client may
/// choose its op id (to find its call in the log); two running calls must never
/// share one, or the daemon's per-operation records would overwrite each other.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<HashSet<String>>>);

/// An op id held by a running call; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    set: InFlight,
    id: String,
}

impl InFlight {
    /// Claim `id`, or `None` if a running call holds it.
    pub(crate) fn claim(&self, id: &str) -> Option<Claim> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(id.to_string()).then(|| Claim {
            set: self.clone(),
            id: id.to_string(),
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_id_is_held_until_its_claim_drops() {
        let f = InFlight::default();
        let a = f.claim("op-1").unwrap();
        assert!(f.claim("op-1").is_none());
        assert!(f.claim("op-2").is_some());
        drop(a);
        assert_eq!(f.len(), 0);
        assert!(f.claim("op-1").is_some());
    }
}
