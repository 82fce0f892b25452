//! Misbehaving local clients: too many connections, half a request line, a client
//! that never reads its replies, a reused op id. Each gets a clear error or a
//! closed connection, and the server keeps answering others and can shut down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_rpc::methods::{self, NoParams, PingResult};
use banger_rpc::{bind, serve_with_options, CallCtx, Router, RpcError, ServeOptions};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

struct Server {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// `ping`, `big` (a 16 MiB result, more than any socket buffer) and `slow` (waits
/// for `release`).
fn router(release: Arc<Notify>) -> Router {
    let mut r = Router::new();
    r.add(methods::Ping, |_ctx, _p: NoParams| async move {
        Ok::<_, RpcError>(PingResult {
            version: "test".into(),
            pid: std::process::id(),
        })
    })
    .unwrap();
    r.add_raw("big", |_ctx: CallCtx, _p: Value| {
        Box::pin(async move { Ok(Value::String("x".repeat(16 << 20))) })
    })
    .unwrap();
    r.add_raw("slow", move |_ctx: CallCtx, _p: Value| {
        let release = release.clone();
        Box::pin(async move {
            release.notified().await;
            Ok(Value::Null)
        })
    })
    .unwrap();
    r
}

async fn start(opts: ServeOptions, release: Arc<Notify>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = bind(&path).unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_options(
        listener,
        Arc::new(router(release)),
        async {
            let _ = rx.await;
        },
        opts,
    ));
    Server {
        _dir: dir,
        path,
        stop,
        task,
    }
}

fn short() -> ServeOptions {
    ServeOptions {
        max_connections: 4,
        read_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
    }
}

/// Send one request line and read one reply line.
async fn call(path: &std::path::Path, line: &str) -> Value {
    let s = UnixStream::connect(path).await.unwrap();
    let (r, mut w) = s.into_split();
    w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(r).lines();
    let reply = lines.next_line().await.unwrap().unwrap();
    serde_json::from_str(&reply).unwrap()
}

async fn ping_works(path: &std::path::Path) {
    let v = call(path, r#"{"v":1,"id":7,"method":"ping"}"#).await;
    assert_eq!(v["id"], 7, "{v}");
    assert!(v.get("result").is_some(), "{v}");
}

/// Read everything until EOF (bounded in time); returns the bytes.
async fn read_to_eof(s: &mut UnixStream) -> Vec<u8> {
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    out
}

#[tokio::test]
async fn connections_beyond_the_cap_get_an_error_and_others_are_still_served() {
    let opts = ServeOptions {
        read_timeout: Duration::from_secs(30),
        ..short()
    };
    let srv = start(opts, Arc::new(Notify::new())).await;
    let mut held = vec![];
    for _ in 0..opts.max_connections {
        held.push(UnixStream::connect(&srv.path).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = UnixStream::connect(&srv.path).await.unwrap();
    let text = String::from_utf8(read_to_eof(&mut extra).await).unwrap();
    assert!(text.contains("maximum of 4 connections"), "{text:?}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    ping_works(&srv.path).await;
    drop(held);
    srv.stop.send(()).unwrap();
    srv.task.await.unwrap();
}

#[tokio::test]
async fn a_partial_line_times_out_and_an_idle_connection_is_closed() {
    let srv = start(short(), Arc::new(Notify::new())).await;
    let mut partial = UnixStream::connect(&srv.path).await.unwrap();
    partial.write_all(br#"{"v":1,"id":1,"meth"#).await.unwrap();
    let text = String::from_utf8(read_to_eof(&mut partial).await).unwrap();
    assert!(text.contains("not completed within"), "{text:?}");
    let mut idle = UnixStream::connect(&srv.path).await.unwrap();
    assert!(read_to_eof(&mut idle).await.is_empty());
    ping_works(&srv.path).await;
    srv.stop.send(()).unwrap();
    srv.task.await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_block_replies_or_shutdown() {
    let srv = start(short(), Arc::new(Notify::new())).await;
    // Ask for 16 MiB and never read: the reply cannot be written.
    let mut stuck = UnixStream::connect(&srv.path).await.unwrap();
    stuck
        .write_all(b"{\"v\":1,\"id\":1,\"method\":\"big\"}\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ping_works(&srv.path).await;
    srv.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .expect("shutdown finished although a client never read its reply")
        .unwrap();
    drop(stuck);
}

#[tokio::test]
async fn a_reused_op_id_is_refused_while_its_call_runs() {
    let release = Arc::new(Notify::new());
    let srv = start(
        ServeOptions {
            read_timeout: Duration::from_secs(30),
            ..short()
        },
        release.clone(),
    )
    .await;
    let first = UnixStream::connect(&srv.path).await.unwrap();
    let (r, mut w) = first.into_split();
    w.write_all(b"{\"v\":1,\"id\":1,\"op_id\":\"mine\",\"method\":\"slow\"}\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = call(
        &srv.path,
        r#"{"v":1,"id":2,"op_id":"mine","method":"ping"}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], "already_exists", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{v}"
    );
    // A different op id is fine meanwhile.
    let v = call(
        &srv.path,
        r#"{"v":1,"id":3,"op_id":"other","method":"ping"}"#,
    )
    .await;
    assert!(v.get("result").is_some(), "{v}");
    release.notify_one();
    let mut lines = BufReader::new(r).lines();
    let done: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(done["op_id"], "mine", "{done}");
    // Once the call is over, its op id may be used again.
    let v = call(
        &srv.path,
        r#"{"v":1,"id":4,"op_id":"mine","method":"ping"}"#,
    )
    .await;
    assert!(v.get("result").is_some(), "{v}");
    drop(w);
    srv.stop.send(()).unwrap();
    srv.task.await.unwrap();
}
