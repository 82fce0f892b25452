//! End-to-end tests over real unix sockets in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_rpc::methods::{
    NoParams, Ping, PingResult, Progress, VmCreate, VmCreateParams, VmDelete, VmDeleteParams,
    VmInfo, VmNameParams, VmShow,
};
use banger_rpc::{
    bind, serve, BindError, CallCtx, Client, ClientError, ErrorCode, Router, RpcError,
};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    finished: Arc<AtomicBool>,
}

impl Server {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

static UPGRADE_DROPPED: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct EchoUpgrade;
impl banger_rpc::Method for EchoUpgrade {
    const NAME: &'static str = "test.echo_upgrade";
    type Params = NoParams;
    type Result = String;
}

#[tokio::test]
async fn an_upgraded_connection_carries_raw_bytes_after_the_result() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start().await;
    let c = Client::connect(&server.path).await.unwrap();
    let (result, mut io) = c
        .call_upgrade::<EchoUpgrade>(&NoParams {}, |_| {})
        .await
        .unwrap();
    assert_eq!(result, "upgraded");
    io.write_all(b"not json at all\n").await.unwrap();
    let mut back = Vec::new();
    io.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"NOT JSON AT ALL\n");

    // A failed call's upgrade is dropped unused; the connection stays line-based.
    let mut c = Client::connect(&server.path).await.unwrap();
    let e = c
        .call_raw::<_, ()>("test.failed_upgrade", &NoParams {}, None, |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no upgrade for you"), "{e}");
    assert!(UPGRADE_DROPPED.load(Ordering::SeqCst));
    let pong = c.call::<Ping>(&NoParams {}, |_| {}).await.unwrap();
    assert_eq!(pong.version, "test");
    server.shutdown().await;
}

fn router(finished: Arc<AtomicBool>) -> Router {
    let mut r = Router::new();
    r.add(Ping, |_ctx, _p| async move {
        Ok::<_, RpcError>(PingResult {
            version: "test".into(),
            pid: std::process::id(),
        })
    })
    .unwrap()
    .add(VmCreate, |ctx: CallCtx, p: VmCreateParams| async move {
        ctx.progress.send("disks", Some("copying seed".into()));
        ctx.progress.stage("boot");
        Ok::<_, RpcError>(VmInfo {
            id: "0123456789ab".into(),
            name: p
                .name
                .map(|n| n.to_string())
                .unwrap_or_else(|| "gen".into()),
            state: banger_model::VmState::Running,
            ip: Ipv4Addr::new(172, 30, 0, 2),
            image: "debian-bookworm".into(),
            cpus: p.cpus.unwrap_or(2),
            memory_mib: 1024,
            disk_mib: 8192,
            created_at: 1,
            started_at: None,
            ports: vec![],
            error: None,
            pid: Some(42),
            timings: vec![],
            workspace: None,
            vmm: Default::default(),
            backend: None,
            init: Default::default(),
            ssh_port: None,
        })
    })
    .unwrap()
    .add(VmShow, |_ctx, p: VmNameParams| async move {
        Err::<VmInfo, _>(RpcError::not_found(format!("no VM named {}", p.name)))
    })
    .unwrap()
    .add(VmDelete, |_ctx, _p: VmDeleteParams| async move {
        Ok::<_, RpcError>(())
    })
    .unwrap()
    .add_named("test.op_id", |ctx: CallCtx, _p: NoParams| async move {
        Ok::<_, RpcError>(ctx.op_id)
    })
    .unwrap()
    .add_named("test.panic", |_ctx, _p: NoParams| async move {
        if std::hint::black_box(true) {
            panic!("handler bug");
        }
        Ok::<_, RpcError>(())
    })
    .unwrap()
    .add_named(
        "test.echo_upgrade",
        |ctx: CallCtx, _p: NoParams| async move {
            // After the result line: read a line, answer it upper-cased, close.
            ctx.upgrade(|io| async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut r, mut w) = tokio::io::split(io);
                let mut buf = vec![0u8; 64];
                let mut got = Vec::new();
                while !got.ends_with(b"\n") {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                w.write_all(&got.to_ascii_uppercase()).await.unwrap();
                w.shutdown().await.unwrap();
            });
            Ok::<_, RpcError>("upgraded")
        },
    )
    .unwrap()
    .add_named(
        "test.failed_upgrade",
        |ctx: CallCtx, _p: NoParams| async move {
            let guard = DropFlag(UPGRADE_DROPPED.clone());
            ctx.upgrade(move |_io| async move {
                let _keep = guard;
                panic!("a failed call's upgrade must never run");
            });
            Err::<(), _>(RpcError::bad_request("no upgrade for you"))
        },
    )
    .unwrap()
    .add_named("test.slow", move |_ctx, _p: NoParams| {
        let finished = Arc::clone(&finished);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            finished.store(true, Ordering::SeqCst);
            Ok::<_, RpcError>("done")
        }
    })
    .unwrap();
    r
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/bangerd.sock");
    let listener = bind(&path).unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Arc::new(router(Arc::clone(&finished))),
        async {
            let _ = rx.await;
        },
    ));
    Server {
        _dir: dir,
        path,
        stop: Some(tx),
        task,
        finished,
    }
}

struct Raw {
    lines: Lines<BufReader<OwnedReadHalf>>,
    w: OwnedWriteHalf,
}

impl Raw {
    async fn connect(path: &Path) -> Self {
        let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
        Self {
            lines: BufReader::new(r).lines(),
            w,
        }
    }

    async fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).await.unwrap();
        self.w.write_all(b"\n").await.unwrap();
    }

    async fn recv(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("reply within 5 s")
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn roundtrip(&mut self, line: &str) -> Value {
        self.send(line).await;
        self.recv().await.expect("a reply line")
    }
}

#[tokio::test]
async fn round_trip_with_progress() {
    let srv = start().await;
    let mut client = Client::connect(&srv.path).await.unwrap();
    let mut seen: Vec<Progress> = vec![];
    let params = VmCreateParams {
        name: Some("dev".parse().unwrap()),
        cpus: Some(4),
        ..Default::default()
    };
    let info: VmInfo = client
        .call::<VmCreate>(&params, |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(info.name, "dev");
    assert_eq!(info.cpus, 4);
    assert_eq!(
        seen.iter()
            .map(|p| (p.stage.as_str(), p.detail.as_deref()))
            .collect::<Vec<_>>(),
        [("disks", Some("copying seed")), ("boot", None)]
    );
    let op = client.last_op_id().unwrap().to_string();
    assert!(op.starts_with("op-") && op.len() == 11, "{op}");

    // Several calls on one connection; unit results decode from null.
    let ping: PingResult = client.call::<Ping>(&NoParams {}, |_| {}).await.unwrap();
    assert_eq!(ping.pid, std::process::id());
    let (): () = client
        .call::<VmDelete>(
            &VmDeleteParams {
                name: "dev".into(),
                ..Default::default()
            },
            |_| {},
        )
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn client_surfaces_rpc_errors_with_op_id() {
    let srv = start().await;
    let mut client = Client::connect(&srv.path).await.unwrap();
    let err = client
        .call_with_op_id::<VmShow>(
            &VmNameParams {
                name: "ghost".into(),
            },
            "cli-1234",
            |_| {},
        )
        .await
        .unwrap_err();
    match err {
        ClientError::Rpc(e) => {
            assert_eq!(e.code, ErrorCode::NotFound);
            assert_eq!(e.message, "no VM named ghost");
            assert_eq!(e.op_id.as_deref(), Some("cli-1234"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.last_op_id(), Some("cli-1234"));
    // The connection stays usable after an error.
    let op: String = client
        .call_raw("test.op_id", &(), Some("mine"), |_| {})
        .await
        .unwrap();
    assert_eq!(op, "mine");
    srv.shutdown().await;
}

#[tokio::test]
async fn ids_and_op_ids_are_echoed() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let r = raw.roundtrip(r#"{"v":1,"id":7,"method":"ping"}"#).await;
    assert_eq!(r["id"], 7);
    assert!(r["op_id"].as_str().unwrap().starts_with("op-"));
    assert!(r["result"]["pid"].is_u64());
    let r = raw
        .roundtrip(r#"{"v":1,"id":8,"op_id":"op-1a2b3c4d","method":"test.op_id","params":{}}"#)
        .await;
    assert_eq!(
        r,
        json!({"v":1,"id":8,"op_id":"op-1a2b3c4d","result":"op-1a2b3c4d"})
    );
    let r = raw
        .roundtrip(
            r#"{"v":1,"id":9,"op_id":"op-deadbeef","method":"vm.show","params":{"name":"x"}}"#,
        )
        .await;
    assert_eq!(r["id"], 9);
    assert_eq!(r["error"]["code"], "not_found");
    assert_eq!(r["error"]["op_id"], "op-deadbeef");
    let r = raw
        .roundtrip(r#"{"v":1,"id":10,"method":"vm.delete","params":{"name":"x"}}"#)
        .await;
    assert_eq!(r["id"], 10);
    assert!(r.get("result").is_some() && r["result"].is_null(), "{r}");
    srv.shutdown().await;
}

#[tokio::test]
async fn progress_lines_precede_the_final_line() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    raw.send(r#"{"v":1,"id":3,"method":"vm.create","params":{}}"#)
        .await;
    let a = raw.recv().await.unwrap();
    let b = raw.recv().await.unwrap();
    let c = raw.recv().await.unwrap();
    assert_eq!(a["id"], 3);
    assert_eq!(a["progress"]["stage"], "disks");
    assert_eq!(a["progress"]["detail"], "copying seed");
    assert!(a["progress"]["elapsed_ms"].is_u64());
    assert_eq!(b["progress"]["stage"], "boot");
    assert_eq!(c["result"]["name"], "gen");
    srv.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_and_the_connection_survives() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let r = raw.roundtrip("{not json").await;
    assert_eq!(r["id"], 0);
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert!(r["error"]["op_id"].as_str().unwrap().starts_with("op-"));
    // Valid JSON, broken envelope: the id is still echoed.
    let r = raw.roundtrip(r#"{"v":1,"id":4}"#).await;
    assert_eq!(r["id"], 4);
    assert_eq!(r["error"]["code"], "bad_request");
    let r = raw.roundtrip(r#"{"v":1,"id":5,"method":"ping"}"#).await;
    assert_eq!(r["id"], 5);
    assert!(r["result"].is_object());
    srv.shutdown().await;
}

#[tokio::test]
async fn json_that_is_not_an_object_is_named_as_such() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    for (line, kind) in [
        ("[1,2,3]", "an array"),
        ("42", "a number"),
        ("\"ping\"", "a string"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        let r = raw.roundtrip(line).await;
        assert_eq!(r["error"]["code"], "bad_request", "{line}: {r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(kind) && msg.contains("not a JSON object"),
            "{line}: {msg}"
        );
    }
    let r = raw.roundtrip(r#"{"v":1,"id":5,"method":"ping"}"#).await;
    assert!(r["result"].is_object());
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_version_is_refused() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let r = raw
        .roundtrip(r#"{"v":2,"id":11,"op_id":"x1","method":"ping"}"#)
        .await;
    assert_eq!(r["id"], 11);
    assert_eq!(r["error"]["code"], "bad_version");
    assert_eq!(r["error"]["op_id"], "x1");
    let r = raw.roundtrip(r#"{"id":12,"method":"ping"}"#).await;
    assert_eq!(r["error"]["code"], "bad_version");
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_method_is_reported() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let r = raw
        .roundtrip(r#"{"v":1,"id":2,"op_id":"op-00000002","method":"vm.nuke"}"#)
        .await;
    assert_eq!(r["id"], 2);
    assert_eq!(r["error"]["code"], "unknown_method");
    assert_eq!(r["error"]["op_id"], "op-00000002");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("vm.nuke") && !msg.contains("vm.create"),
        "{msg}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_params_are_a_bad_request() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let r = raw
        .roundtrip(r#"{"v":1,"id":6,"method":"vm.create","params":{"name":"Not Valid"}}"#)
        .await;
    assert_eq!(r["id"], 6);
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("vm.create"));
    let r = raw
        .roundtrip(r#"{"v":1,"id":7,"method":"vm.show","params":[1]}"#)
        .await;
    assert_eq!(r["error"]["code"], "bad_request");
    let r = raw
        .roundtrip(r#"{"v":1,"id":8,"op_id":"bad op id","method":"ping"}"#)
        .await;
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("op_id"));
    srv.shutdown().await;
}

#[tokio::test]
async fn oversize_line_is_refused_and_the_connection_closed() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    let huge = format!(
        r#"{{"v":1,"id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(banger_rpc::MAX_REQUEST_LINE)
    );
    // The server may close before reading everything; ignore write errors.
    let _ = raw.w.write_all(huge.as_bytes()).await;
    let _ = raw.w.write_all(b"\n").await;
    let r = raw.recv().await.expect("an error line before closing");
    assert_eq!(r["id"], 0);
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("longer than"));
    assert_eq!(raw.recv().await, None, "connection must be closed");
    drop(raw);
    srv.shutdown().await;
}

#[tokio::test]
async fn handler_panic_is_an_operation_failure() {
    let srv = start().await;
    let mut client = Client::connect(&srv.path).await.unwrap();
    let err = client
        .call_raw::<_, ()>("test.panic", &(), None, |_| {})
        .await
        .unwrap_err();
    let ClientError::Rpc(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, ErrorCode::OperationFailed);
    assert!(e.message.contains(e.op_id.as_deref().unwrap()));
    // The daemon keeps serving.
    let _: PingResult = client.call::<Ping>(&NoParams {}, |_| {}).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_does_not_cancel_the_handler() {
    let srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    raw.send(r#"{"v":1,"id":1,"method":"test.slow"}"#).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(srv.finished.load(Ordering::SeqCst));
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let mut srv = start().await;
    let mut raw = Raw::connect(&srv.path).await;
    raw.send(r#"{"v":1,"id":1,"method":"test.slow"}"#).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = srv.stop.take().unwrap().send(());
    let r = raw.recv().await.unwrap();
    assert_eq!(r["result"], "done");
    assert_eq!(raw.recv().await, None, "closed after the in-flight call");
    srv.shutdown().await;
}

#[tokio::test]
async fn connect_to_missing_socket_says_whether_bangerd_runs() {
    let dir = tempfile::tempdir().unwrap();
    let err = Client::connect(dir.path().join("nope.sock"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }));
    assert!(err.to_string().contains("is bangerd running?"), "{err}");
}

#[tokio::test]
async fn client_reports_a_hangup_as_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let _ = lines.next_line().await;
        // Drop without answering.
    });
    let mut client = Client::connect(&path).await.unwrap();
    let err = client
        .call_raw::<_, ()>("ping", &(), None, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn client_rejects_replies_for_other_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let _ = lines.next_line().await;
        let _ = w
            .write_all(b"{\"v\":1,\"id\":99,\"op_id\":\"x\",\"result\":null}\n")
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let mut client = Client::connect(&path).await.unwrap();
    let err = client
        .call_raw::<_, ()>("ping", &(), None, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request 99"), "{err}");
}

#[tokio::test]
async fn bind_makes_private_socket_and_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/bangerd.sock");
    let _listener = bind(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[tokio::test]
async fn bind_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bangerd.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a dead daemon leaves its socket file behind");
    let listener = bind(&path).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Arc::new(router(Arc::default())), async {
        let _ = rx.await;
    }));
    let mut client = Client::connect(&path).await.unwrap();
    let _: PingResult = client.call::<Ping>(&NoParams {}, |_| {}).await.unwrap();
    tx.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn bind_refuses_a_live_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bangerd.sock");
    let _live = bind(&path).unwrap();
    let err = bind(&path).unwrap_err();
    assert!(matches!(err, BindError::AlreadyRunning(_)), "{err:?}");
    assert!(err
        .to_string()
        .contains("another bangerd is already listening on"));
    assert!(path.exists(), "the live socket must be left alone");
}

#[tokio::test]
async fn bind_refuses_to_clobber_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bangerd.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = bind(&path).unwrap_err();
    assert!(matches!(err, BindError::NotASocket(_)), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = bind(&dir.path().join("s.sock")).unwrap_err();
    assert!(matches!(err, BindError::NoRuntime(_)));
}
