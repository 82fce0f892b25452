//! Log lines written while a handler runs carry the call's op id, so
//! `journalctl --grep op-XXXX` finds everything about one failed call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_rpc::methods::NoParams;
use banger_rpc::{bind, serve, Client, Router, RpcError};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn handler_logs_carry_the_op_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // Current-thread runtime: spawned handler tasks run on this thread and
    // see the thread-local default subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut router = Router::new();
    router
        .add_named("work", |_ctx, _p: NoParams| async move {
            tracing::info!("copying disks");
            Err::<(), _>(RpcError::operation_failed("disk full"))
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = bind(&path).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::new(router), async {
        let _ = rx.await;
    }));

    let mut client = Client::connect(&path).await.unwrap();
    let _ = client
        .call_raw::<_, ()>("work", &(), Some("op-cafe0001"), |_| {})
        .await
        .unwrap_err();
    tx.send(()).unwrap();
    server.await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let handler_line = log
        .lines()
        .find(|l| l.contains("copying disks"))
        .unwrap_or_else(|| panic!("handler log line missing from:\n{log}"));
    assert!(handler_line.contains("op-cafe0001"), "{handler_line}");
    let failure = log
        .lines()
        .find(|l| l.contains("call failed"))
        .unwrap_or_else(|| panic!("failure line missing from:\n{log}"));
    assert!(
        failure.contains("op-cafe0001") && failure.contains("disk full"),
        "{failure}"
    );
}
