//! VM state changes for `banger events` and `vm wait`: the store announces every
//! committed change (`Store::observe_vms`), this ring keeps the recent ones with a
//! sequence number, and `vm.events` long-polls it (see `banger_rpc::methods::events`
//! for why a long poll).

use banger_rpc::{VmEvent, VmEventsParams, VmEventsResult, MAX_EVENTS_WAIT_MS};
use banger_store::VmChange;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How many events are kept for readers that fall behind.
const KEEP: usize = 4096;

/// The recent events and a signal for waiters.
pub struct Events {
    ring: Mutex<VecDeque<VmEvent>>,
    latest: tokio::sync::watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            latest: tokio::sync::watch::Sender::new(0),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Events {
    /// Record a change (called by the store's observer, so it must not block long).
    pub fn push(&self, c: &VmChange) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *self.latest.borrow() + 1;
        ring.push_back(VmEvent {
            seq,
            at: now(),
            vm: c.name.clone(),
            id: c.id.clone(),
            state: c
                .state
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "deleted".into()),
            error: c.error.clone(),
        });
        while ring.len() > KEEP {
            ring.pop_front();
        }
        // Under the ring's lock, so sequence numbers are handed out in ring order.
        self.latest.send_replace(seq);
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    fn after(&self, after: u64) -> VmEventsResult {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let events: Vec<VmEvent> = ring.iter().filter(|e| e.seq > after).cloned().collect();
        let lost = ring.front().is_some_and(|e| e.seq > after + 1);
        VmEventsResult {
            next: events.last().map(|e| e.seq).unwrap_or(after),
            events,
            lost,
        }
    }

    /// `vm.events`: what came after `p.after`, waiting up to `p.wait_ms` for a first one.
    pub async fn poll(&self, p: VmEventsParams) -> VmEventsResult {
        let mut rx = self.latest.subscribe();
        let after = p.after.unwrap_or_else(|| *rx.borrow_and_update());
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(p.wait_ms.min(MAX_EVENTS_WAIT_MS));
        loop {
            let r = self.after(after);
            if !r.events.is_empty() || r.lost {
                return r;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::VmState;
    use std::sync::Arc;

    fn change(name: &str, state: Option<VmState>) -> VmChange {
        VmChange {
            id: format!("id-{name}"),
            name: name.into(),
            state,
            error: None,
        }
    }

    #[tokio::test]
    async fn a_waiting_reader_gets_the_next_event() {
        let ev = Arc::new(Events::default());
        ev.push(&change("old", Some(VmState::Running)));
        let ev2 = Arc::clone(&ev);
        let reader = tokio::spawn(async move {
            ev2.poll(VmEventsParams {
                after: None,
                wait_ms: 5_000,
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        ev.push(&change("dev", Some(VmState::Stopped)));
        let r = reader.await.unwrap();
        assert_eq!(r.events.len(), 1, "{r:?}");
        assert_eq!((r.events[0].vm.as_str(), r.events[0].state.as_str()), ("dev", "stopped"));
        assert_eq!(r.next, 2);
        let r = ev
            .poll(VmEventsParams {
                after: Some(0),
                wait_ms: 0,
            })
            .await;
        assert_eq!(r.events.len(), 2);
        ev.push(&change("dev", None));
        let r = ev
            .poll(VmEventsParams {
                after: Some(2),
                wait_ms: 0,
            })
            .await;
        assert_eq!(r.events[0].state, "deleted");
    }

    #[tokio::test]
    async fn nothing_happening_returns_empty_after_the_wait() {
        let ev = Events::default();
        let r = ev
            .poll(VmEventsParams {
                after: None,
                wait_ms: 20,
            })
            .await;
        assert!(r.events.is_empty() && !r.lost);
        assert_eq!(r.next, 0);
    }

    #[tokio::test]
    async fn a_reader_that_fell_behind_is_told() {
        let ev = Events::default();
        for _ in 0..(KEEP + 10) {
            ev.push(&change("x", Some(VmState::Running)));
        }
        let r = ev
            .poll(VmEventsParams {
                after: Some(1),
                wait_ms: 0,
            })
            .await;
        assert!(r.lost);
        assert_eq!(r.events.len(), KEEP);
    }
}
