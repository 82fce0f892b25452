//! The relay between a requester and a worker (the daemon between the CLI and the
//! guest agent): a session attached on both ends of the requester's connection,
//! spliced to a session opened on the worker's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_channel::tokio::{splice, Config, Connection, Session, Spliced};
use banger_channel::{Control, ErrorKind, Limits, Open, Put, Stream};
use common::{client, read_all, server, tokio_stream};

/// The requester's connection (client role) and the relay's end (server role), with
/// session 1 attached on both.
async fn attached() -> (Connection, Session, Connection, Session) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (req, relay) = tokio::join!(
        Connection::handshake(tokio_stream(a), Config::client("cli")),
        Connection::handshake(tokio_stream(b), Config::server("relay"))
    );
    let (req, relay) = (req.unwrap(), relay.unwrap());
    let down_req = req.attach(1).unwrap();
    let down = relay.attach(1).unwrap();
    (req, down_req, relay, down)
}

fn put(dir: &str) -> Open {
    Open::Put(Put {
        dir: dir.into(),
        preserve_owner: false,
    })
}

#[tokio::test]
async fn attach_keeps_numbers_to_their_owners() {
    let (req, _s, relay, _d) = attached().await;
    assert!(req.attach(1).is_err(), "in use");
    assert!(req.attach(0).is_err(), "the connection");
    // The client's own numbering continues after the attached one.
    assert!(relay.attach(1).is_err());
    let s3 = req.attach(3).unwrap();
    assert_eq!(s3.id(), 3);
    assert!(req.attach(1).is_err(), "spent");
}

#[tokio::test]
async fn a_session_is_relayed_both_ways_with_its_answer_last() {
    let (srv, sock) = server(Limits::default());
    let worker = client(sock).await;
    let (_req, cli, _relay, down) = attached().await;
    let up = worker.open(&put("echo")).unwrap();
    assert_eq!(
        up.control().await.unwrap(),
        Some(Control::Started { pid: None })
    );
    let relay = tokio::spawn(async move { splice(&down, &up).await });
    // 3 MiB through two hops of 256 KiB windows: credit must flow end to end.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let (_, out, err) = tokio::join!(
        async {
            cli.write_all(Stream::In, &data).await.unwrap();
            cli.eof(Stream::In).unwrap();
        },
        read_all(&cli, Stream::Out),
        read_all(&cli, Stream::Err)
    );
    assert!(out == data);
    assert_eq!(err, b"3000000");
    assert!(matches!(cli.control().await.unwrap(), Some(Control::Done(d)) if d.bytes == 3_000_000));
    assert_eq!(relay.await.unwrap(), Spliced::Finished);
    drop(worker);
    drop(srv);
}

#[tokio::test]
async fn signals_reach_the_worker_and_its_exit_comes_back() {
    let (_srv, sock) = server(Limits::default());
    let worker = client(sock).await;
    let (_req, cli, _relay, down) = attached().await;
    let exec = Open::Exec(banger_channel::Exec {
        command: banger_channel::Command::LoginShell,
        env: Default::default(),
        clear_env: false,
        cwd: None,
        user: None,
        pty: None,
    });
    let up = worker.open(&exec).unwrap();
    assert_eq!(
        up.control().await.unwrap(),
        Some(Control::Started { pid: None })
    );
    let relay = tokio::spawn(async move { splice(&down, &up).await });
    cli.send(&Control::Signal { signal: 2 }).unwrap();
    match cli.control().await.unwrap() {
        Some(Control::Exit(x)) => assert_eq!(x.signal, Some(2)),
        other => panic!("expected the exit, got {other:?}"),
    }
    assert_eq!(relay.await.unwrap(), Spliced::Finished);
}

#[tokio::test]
async fn a_requester_that_leaves_hangs_the_work_up() {
    let (srv, sock) = server(Limits::default());
    let worker = client(sock).await;
    let (req, cli, _relay, down) = attached().await;
    // A get of 64 MiB that nobody reads: the worker blocks on its window.
    let up = worker
        .open(&Open::Get(banger_channel::Get {
            path: "big:67108864".into(),
        }))
        .unwrap();
    assert_eq!(
        up.control().await.unwrap(),
        Some(Control::Started { pid: None })
    );
    let relay = tokio::spawn(async move { splice(&down, &up).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(cli);
    drop(req);
    assert_eq!(relay.await.unwrap(), Spliced::RequesterLeft);
    // The worker wrote no more than the two windows (relay's and worker's) allow.
    let written = srv.written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(written <= 2 * 1024 * 1024, "{written}");
}

#[tokio::test]
async fn a_failing_worker_is_reported_to_the_requester() {
    // A worker that answers the handshake, then breaks the framing.
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let n = b.read(&mut buf).unwrap_or(0);
        let nonce = common::client_nonce(&buf[..n]);
        b.write_all(&common::server_hello_for(nonce, 1, 1, "hostile"))
            .unwrap();
        // Wait for the open, then a frame header claiming 4 GiB.
        let _ = b.read(&mut buf);
        let _ = b.write_all(&[0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1, 0x11]);
        let _ = b.read_to_end(&mut Vec::new());
    });
    let worker = client(a).await;
    let (_req, cli, _relay, down) = attached().await;
    let up = worker.open(&put("x")).unwrap();
    let relay = tokio::spawn(async move { splice(&down, &up).await });
    match cli.control().await.unwrap() {
        Some(Control::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Failed);
            assert!(e.message.contains("exceeds"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(relay.await.unwrap(), Spliced::WorkerFailed(_)));
}
