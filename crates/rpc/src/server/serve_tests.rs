//! Unit tests of `serve.rs`: request parsing and the per-connection loop.

use super::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[test]
fn access_policy() {
    let a = Access {
        owner: 1000,
        allow_root: true,
    };
    assert!(a.allows(1000));
    assert!(a.allows(0));
    assert!(!a.allows(1001));
    let strict = Access {
        owner: 1000,
        allow_root: false,
    };
    assert!(!strict.allows(0));
}

#[tokio::test]
async fn other_users_get_one_unauthorized_line_and_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // Nobody real has this uid, so the test process (whatever its uid) is a stranger.
    let access = Access {
        owner: u32::MAX - 1,
        allow_root: false,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        Arc::new(Router::new()),
        async {
            let _ = rx.await;
        },
        access,
        ServeOptions::default(),
    ));
    let stream = UnixStream::connect(&path).await.unwrap();
    let (r, mut w) = stream.into_split();
    let _ = w
        .write_all(b"{\"v\":1,\"id\":1,\"method\":\"ping\"}\n")
        .await;
    let mut lines = BufReader::new(r).lines();
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["error"]["code"], "unauthorized");
    assert!(first["error"]["op_id"].as_str().unwrap().starts_with("op-"));
    assert_eq!(
        lines.next_line().await.unwrap(),
        None,
        "connection must be closed"
    );
    drop(w);
    tx.send(()).unwrap();
    server.await.unwrap();
}
