//! VM state changes as a stream (`events.watch`, `banger events`, `banger vm wait`).
//!
//! Every place that records a VM's state calls [`Events::vm`] right after the store
//! write succeeded, so a watcher never sees a state the store does not hold. The
//! stream is a broadcast: watchers that fall behind lose the oldest events and get
//! one `lagged` line instead of slowing the daemon down.

use crate::app::App;
use banger_model::{VmRecord, VmState};
use banger_rpc::{CallCtx, Upgraded, VmEvent, WatchResult};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// Events kept for a slow watcher before it is told it lagged.
const BUFFER: usize = 1024;
/// How long one event line may take to write before the watcher is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's event bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<VmEvent>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(BUFFER);
        Self { tx }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Events {
    /// `rec` is now in `state` (`error` with its reason).
    pub fn vm(&self, rec: &VmRecord, state: VmState, error: Option<&str>) {
        self.send(rec, state.as_str(), error);
    }

    /// `rec` is gone.
    pub fn deleted(&self, rec: &VmRecord) {
        self.send(rec, "deleted", None);
    }

    fn send(&self, rec: &VmRecord, state: &str, error: Option<&str>) {
        // No receivers is not an error: nobody is watching.
        let _ = self.tx.send(VmEvent {
            at_ms: now_ms(),
            vm: rec.name.to_string(),
            id: rec.id.clone(),
            state: state.to_string(),
            error: error.map(str::to_string),
        });
    }

    /// A new watcher, seeing every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.tx.subscribe()
    }
}

/// `events.watch`: subscribe now (so nothing between the answer and the first read
/// is lost), answer, then write one JSON line per event until the client leaves.
pub fn watch(app: &App, ctx: &CallCtx) -> WatchResult {
    let rx = app.events.subscribe();
    ctx.upgrade(move |io| relay(rx, io));
    WatchResult { watching: true }
}

async fn relay(mut rx: broadcast::Receiver<VmEvent>, io: Upgraded) {
    let (mut r, mut w) = tokio::io::split(io);
    // The client sends nothing; reading tells us when it left, so a watcher that is
    // gone does not hold its connection until the next event.
    let mut sink = [0u8; 256];
    loop {
        let got = tokio::select! {
            got = rx.recv() => got,
            n = r.read(&mut sink) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        let ev = match got {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => VmEvent {
                at_ms: now_ms(),
                vm: String::new(),
                id: String::new(),
                state: "lagged".into(),
                error: Some(format!("{n} events were dropped; re-read the VM list")),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Ok(mut line) = serde_json::to_vec(&ev) else {
            continue;
        };
        line.push(b'\n');
        match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&line)).await {
            Ok(Ok(())) => {}
            // The client left or stopped reading.
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::tests::fakes::app_with;
    use banger_model::VmName;
    use banger_rpc::{ProgressSink, VmCreateParams, VmDeleteParams};

    #[tokio::test]
    async fn a_vms_life_is_seen_in_order_and_lag_is_reported() {
        let (_d, app, _w) = app_with(|_| {});
        let mut rx = app.events.subscribe();
        let p = VmCreateParams {
            name: Some(VmName::parse("dev").unwrap()),
            ..Default::default()
        };
        crate::vm::create::create(&app, "op-1", p, &ProgressSink::detached())
            .await
            .unwrap();
        let rec = app.db(|s| s.get_vm_by_name("dev")).unwrap();
        crate::vm::stop::kill(&app, "dev").await.unwrap();
        crate::vm::delete::delete(
            &app,
            VmDeleteParams {
                name: "dev".into(),
                force: true,
                created_op: None,
            },
        )
        .await
        .unwrap();
        let mut got = vec![];
        while let Ok(e) = rx.try_recv() {
            assert_eq!(e.vm, "dev");
            got.push(e.state);
        }
        assert_eq!(got, ["creating", "running", "stopped", "deleted"]);
        let ev = Events::default();
        let mut rx = ev.subscribe();
        for _ in 0..(BUFFER + 5) {
            ev.vm(&rec, VmState::Running, None);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
