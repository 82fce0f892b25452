//! What a handler gets besides its params: who called, under which op id, and
//! a way to report progress.

use crate::methods::Progress;
use crate::upgrade::{UpgradeFn, UpgradeSlot, Upgraded};
use std::future::Future;
use std::time::Instant;
use tokio::sync::mpsc;

/// How many progress lines may wait for a slow client before new ones are
/// dropped. Progress is advisory: a handler must never stall on its client.
const PROGRESS_BUFFER: usize = 256;

/// Per-call context handed to every handler.
#[derive(Debug, Clone)]
pub struct CallCtx {
    /// The operation id; also recorded on the tracing span around the call.
    pub op_id: String,
    /// Uid of the connecting process (from SO_PEERCRED).
    pub peer_uid: u32,
    /// Emits progress lines to the caller.
    pub progress: ProgressSink,
    /// What to run on the connection after the result line, if anything.
    pub(crate) upgrade: UpgradeSlot,
}

impl CallCtx {
    /// A context for in-process calls (tests, daemon-internal work) whose
    /// progress goes nowhere.
    pub fn detached(op_id: impl Into<String>, peer_uid: u32) -> Self {
        Self {
            op_id: op_id.into(),
            peer_uid,
            progress: ProgressSink::detached(),
            upgrade: UpgradeSlot::default(),
        }
    }

    /// Take the connection over once the successful result line is written: `f` gets
    /// the raw stream (see [`crate::upgrade`]). Calling it again replaces `f`. If the
    /// call fails, or the client is gone before its result was written, `f` is dropped
    /// without running (drop what it owns to undo).
    pub fn upgrade<F, Fut>(&self, f: F)
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: UpgradeFn = Box::new(move |u| Box::pin(f(u)));
        self.upgrade.set(f);
    }

    /// Whether a handler asked for the connection (tests, in-process calls).
    pub fn take_upgrade(&self) -> Option<UpgradeFn> {
        self.upgrade.take()
    }
}

/// Cheap, clonable handle that turns `send(stage, detail)` into a progress line
/// for the current call. `elapsed_ms` is measured from the start of the call,
/// so the CLI can show how long each stage took without its own clock.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    tx: Option<mpsc::Sender<Progress>>,
    start: Instant,
}

impl ProgressSink {
    /// A sink wired to a connection; the server drains the receiver.
    pub(crate) fn channel() -> (Self, mpsc::Receiver<Progress>) {
        let (tx, rx) = mpsc::channel(PROGRESS_BUFFER);
        (
            Self {
                tx: Some(tx),
                start: Instant::now(),
            },
            rx,
        )
    }

    /// A sink that discards everything.
    pub fn detached() -> Self {
        Self {
            tx: None,
            start: Instant::now(),
        }
    }

    /// Report that the call reached `stage`, with an optional detail. Never
    /// blocks and never fails: after the call finished, or if the client is
    /// too slow, the line is dropped.
    pub fn send(&self, stage: impl Into<String>, detail: Option<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Progress {
                stage: stage.into(),
                detail,
                elapsed_ms: self.elapsed_ms(),
            });
        }
    }

    /// Report a stage without detail.
    pub fn stage(&self, stage: impl Into<String>) {
        self.send(stage, None);
    }

    /// Milliseconds since the call started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_in_order_with_elapsed_time() {
        let (sink, mut rx) = ProgressSink::channel();
        let clone = sink.clone();
        sink.send("disks", Some("copy".into()));
        clone.stage("boot");
        let a = rx.try_recv().unwrap();
        let b = rx.try_recv().unwrap();
        assert_eq!(
            (a.stage.as_str(), a.detail.as_deref()),
            ("disks", Some("copy"))
        );
        assert_eq!((b.stage.as_str(), b.detail), ("boot", None));
        assert!(b.elapsed_ms >= a.elapsed_ms);
    }

    #[test]
    fn never_blocks_when_nobody_listens() {
        let (sink, rx) = ProgressSink::channel();
        drop(rx);
        for _ in 0..(PROGRESS_BUFFER * 2) {
            sink.stage("x");
        }
        ProgressSink::detached().stage("y");
    }
}
