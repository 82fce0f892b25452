//! The sync server and the tokio client over a socketpair: many sessions at once, flow
//! control in both directions, the caps, and peers that break the rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_channel::frame::{encode, Kind};
use banger_channel::limits::{INITIAL_WINDOW, PREAMBLE};
use banger_channel::tokio::{Config, Connection, HandshakeError, SessionError};
use banger_channel::{Control, ErrorKind, FrameError, Get, Hello, Limits, Open, Put, Role, Stream};
use common::{client, pattern, read_all, server};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The server ends when the client closes: with the client's goaway, cleanly.
async fn server_ended(srv: common::Server) {
    let r = tokio::task::spawn_blocking(move || srv.done.join())
        .await
        .expect("join")
        .expect("server thread");
    match r {
        Ok(()) => {}
        Err(banger_channel::sync::ServeError::Goaway(m)) => {
            assert!(m.contains("closed by this side"), "{m}")
        }
        Err(e) => panic!("the server failed: {e}"),
    }
}

fn put(dir: &str) -> Open {
    Open::Put(Put {
        dir: dir.into(),
        preserve_owner: false,
    })
}

fn exec() -> Open {
    Open::Exec(banger_channel::Exec {
        command: banger_channel::Command::LoginShell,
        env: Default::default(),
        clear_env: false,
        cwd: None,
        user: None,
        pty: None,
    })
}

#[tokio::test]
async fn many_sessions_interleave_on_one_connection() {
    let (srv, sock) = server(Limits::default());
    let conn = client(sock).await;
    let mut tasks = Vec::new();
    for k in 0..8u8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let s = conn.open(&put("echo")).expect("open");
            assert_eq!(
                s.control().await.expect("control"),
                Some(Control::Started { pid: None })
            );
            // 1 MiB each: several windows, so credit has to flow back and forth.
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i as u8) ^ k).collect();
            let (w, r) = tokio::join!(
                async {
                    s.write_all(Stream::In, &data).await.expect("write");
                    s.eof(Stream::In).expect("eof");
                },
                read_all(&s, Stream::Out)
            );
            let () = w;
            assert!(r == data, "session {k} got its own bytes back");
            assert_eq!(read_all(&s, Stream::Err).await, b"1000000");
            assert!(matches!(
                s.control().await.expect("done"),
                Some(Control::Done(d)) if d.bytes == 1_000_000
            ));
            assert_eq!(s.control().await.expect("closed"), None);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    drop(conn);
    server_ended(srv).await;
}

#[tokio::test]
async fn a_slow_reader_holds_the_sender_to_its_window() {
    let (srv, sock) = server(Limits::default());
    let conn = client(sock).await;
    let total = 8 * INITIAL_WINDOW as u64;
    let s = conn
        .open(&Open::Get(Get {
            path: format!("big:{total}"),
        }))
        .expect("open");
    // Nothing is read: the server's writer must stop at the window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = srv.written.load(Ordering::SeqCst);
    assert!(
        sent <= u64::from(INITIAL_WINDOW),
        "the server sent {sent} bytes into a {INITIAL_WINDOW}-byte window"
    );
    let got = read_all(&s, Stream::Out).await;
    assert_eq!(got.len() as u64, total);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)));
    drop((s, conn));
    server_ended(srv).await;
}

#[tokio::test]
async fn a_writer_waits_for_credit_until_the_reader_reads() {
    let (_srv, sock) = server(Limits::default());
    let conn = client(sock).await;
    let s = conn.open(&put("wait")).expect("open");
    let data = vec![7u8; 4 * INITIAL_WINDOW as usize];
    // The server reads nothing yet: the write stops after one window.
    let early =
        tokio::time::timeout(Duration::from_millis(300), s.write_all(Stream::In, &data)).await;
    assert!(early.is_err(), "4 windows of data went out with no credit");
    // Let it read; the reader must drain stdout too or the echo would stall.
    s.send(&Control::Resize(banger_channel::WinSize {
        rows: 1,
        cols: 1,
    }))
    .expect("go");
    let reader = {
        let s = s.clone();
        tokio::spawn(async move { read_all(&s, Stream::Out).await.len() })
    };
    s.write_all(Stream::In, &data).await.expect("write");
    s.eof(Stream::In).expect("eof");
    // The timed-out first write sent some bytes too; at least the second one came back.
    assert!(reader.await.expect("reader") >= data.len());
}

#[tokio::test]
async fn opens_beyond_the_cap_are_refused_and_the_rest_still_work() {
    let limits = Limits {
        max_sessions: 2,
        ..Limits::default()
    };
    let (_srv, sock) = server(limits);
    let conn = client(sock).await;
    let a = conn.open(&exec()).expect("a");
    let b = conn.open(&exec()).expect("b");
    for s in [&a, &b] {
        assert!(matches!(
            s.control().await,
            Ok(Some(Control::Started { .. }))
        ));
    }
    let c = conn.open(&exec()).expect("c is sent");
    match c.control().await.expect("refusal") {
        Some(Control::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::Refused);
            assert!(e.message.contains("too many sessions"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A signal reaches its own session only.
    b.send(&Control::Signal { signal: 15 }).expect("signal");
    match b.control().await.expect("exit") {
        Some(Control::Exit(x)) => assert_eq!(x.signal, Some(15)),
        other => panic!("expected exit, got {other:?}"),
    }
    a.send(&Control::Signal { signal: 2 }).expect("signal");
    assert!(matches!(a.control().await, Ok(Some(Control::Exit(x))) if x.signal == Some(2)));
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn flooding_a_session_with_control_messages_ends_the_connection() {
    let (srv, sock) = server(Limits::default());
    let conn = client(sock).await;
    let _started = {
        let s = conn.open(&put("wait")).expect("open");
        s.control().await.expect("started");
        s
    };
    // The handler queues 4 and takes one; the 6th overflows its sink.
    let s = _started;
    for _ in 0..50 {
        if s.send(&Control::Resize(banger_channel::WinSize {
            rows: 1,
            cols: 1,
        }))
        .is_err()
        {
            break;
        }
    }
    let reason = conn.closed().await;
    assert!(reason.contains("control messages pending"), "{reason}");
    let e = tokio::task::spawn_blocking(move || srv.done.join())
        .await
        .expect("join")
        .expect("server")
        .unwrap_err();
    assert!(e.to_string().contains("control messages pending"), "{e}");
}

/// A raw peer: the client end of a socketpair driven byte by byte.
struct Raw(std::os::unix::net::UnixStream);

impl Raw {
    fn hello(&mut self, role: Role) {
        let h = serde_json::to_vec(&Hello::new(role, "raw")).expect("json");
        self.send(PREAMBLE);
        self.send(&encode(0, Kind::Hello, &h));
    }
    fn send(&mut self, b: &[u8]) {
        let _ = self.0.write_all(b);
    }
    /// Everything the other side writes until it closes.
    fn drain(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.0.read_to_end(&mut v);
        v
    }
}

/// The goaway message in what a server wrote, if any.
fn goaway(bytes: &[u8]) -> String {
    let frames = banger_channel::decoder::Decoder::new(Limits::default())
        .decode_all(bytes)
        .unwrap_or_default();
    frames
        .iter()
        .find(|f| f.kind == Kind::Goaway)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .unwrap_or_default()
}

#[test]
fn the_server_refuses_hostile_clients_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "giant frame",
            encode(1, Kind::Data(Stream::In), b"x")
                .iter()
                .enumerate()
                .map(|(i, b)| if i < 4 { 0xff } else { *b })
                .collect(),
            "exceeds",
        ),
        (
            "unknown kind",
            vec![0, 0, 0, 1, 0, 0, 0, 1, 0x7f, 0],
            "unknown frame kind",
        ),
        (
            "data on an unopened stream direction",
            encode(1, Kind::Data(Stream::Out), b"x"),
            "Out stream",
        ),
        (
            "even session",
            encode(2, Kind::Open, br#"{"type":"ping"}"#),
            "odd number",
        ),
        (
            "control that is not JSON",
            [
                encode(1, Kind::Open, br#"{"type":"exec","command":"login_shell"}"#),
                encode(1, Kind::Control, b"{nope"),
            ]
            .concat(),
            "malformed control",
        ),
        (
            "data beyond the window",
            {
                let mut v = encode(1, Kind::Open, br#"{"type":"put","dir":"wait"}"#);
                let chunk = encode(1, Kind::Data(Stream::In), &vec![0u8; 60_000]);
                for _ in 0..6 {
                    v.extend(&chunk);
                }
                v
            },
            "credit",
        ),
    ];
    for (what, bytes, expect) in cases {
        let (srv, sock) = server(Limits::default());
        let mut raw = Raw(sock);
        raw.hello(Role::Client);
        raw.send(&bytes);
        let e = srv.done.join().expect("server").unwrap_err();
        assert!(e.to_string().contains(expect), "{what}: {e}");
        raw.0.shutdown(std::net::Shutdown::Write).ok();
        let g = goaway(&raw.drain());
        assert!(g.contains(expect), "{what}: goaway {g:?}");
    }
}

#[test]
fn the_server_gives_up_on_endless_junk() {
    let (srv, sock) = server(Limits::default());
    let mut raw = Raw(sock);
    let w = std::thread::spawn(move || {
        for _ in 0..1000 {
            raw.send(&[b'a'; 4096]);
        }
    });
    let e = srv.done.join().expect("server").unwrap_err();
    assert!(
        matches!(
            e,
            banger_channel::sync::ServeError::Frame(FrameError::NoPreamble(_))
        ),
        "{e}"
    );
    w.join().expect("writer");
}

/// A raw server: reads the client's hello, answers with `reply(its nonce)`, then
/// writes `then`.
fn raw_server_with(
    reply: impl FnOnce(Option<u64>) -> Vec<u8> + Send + 'static,
    then: Vec<u8>,
) -> std::os::unix::net::UnixStream {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = b.read(&mut buf).unwrap_or(0);
        let nonce = common::client_nonce(&buf[..n]);
        let _ = b.write_all(&reply(nonce));
        let _ = b.write_all(&then);
        // Keep the stream open until the client hangs up.
        let _ = b.read_to_end(&mut Vec::new());
    });
    a
}

/// A raw server answering with fixed bytes.
fn raw_server(reply: Vec<u8>, then: Vec<u8>) -> std::os::unix::net::UnixStream {
    raw_server_with(move |_| reply, then)
}

/// A raw server answering with a proper hello of versions `min..=protocol`.
fn raw_agent(protocol: u32, min: u32, then: Vec<u8>) -> std::os::unix::net::UnixStream {
    raw_server_with(
        move |nonce| common::server_hello_for(nonce, protocol, min, "raw-agent"),
        then,
    )
}

#[tokio::test]
async fn the_client_refuses_hostile_servers_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "giant frame",
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0x11],
            "exceeds",
        ),
        (
            "garbage",
            b"\x00\x00\x00\x01\x00\x00\x00\x01\xee!".to_vec(),
            "unknown frame kind",
        ),
        (
            "an open from the agent",
            encode(2, Kind::Open, br#"{"type":"ping"}"#),
            "accepts none",
        ),
        (
            "output beyond the window",
            {
                let chunk = encode(1, Kind::Data(Stream::Out), &vec![1u8; 1 << 20]);
                [chunk.clone(), chunk].concat()
            },
            "credit",
        ),
        (
            "stdin from the agent",
            encode(1, Kind::Data(Stream::In), b"x"),
            "flows the other way",
        ),
        (
            "an absurd grant",
            encode(1, Kind::Window(Stream::In), &u32::MAX.to_be_bytes()),
            "granted",
        ),
    ];
    for (what, then, expect) in cases {
        let conn = client(raw_agent(1, 1, then)).await;
        let _s = conn.open(&put("x")).expect("open");
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the client noticed");
        assert!(reason.contains(expect), "{what}: {reason}");
        assert!(matches!(
            _s.read(Stream::Out).await,
            Err(SessionError::Lost(_)) | Ok(None)
        ));
    }
}

#[tokio::test]
async fn handshakes_fail_clearly() {
    let config = || Config::client("t");
    let hs = |sock| Connection::handshake(common::tokio_stream(sock), config());

    let e = hs(raw_agent(5, 4, vec![])).await.unwrap_err();
    assert!(matches!(e, HandshakeError::Version(_)), "{e}");
    assert!(e.to_string().contains("raw-agent speaks 4..=5"), "{e}");

    let legacy = b"{\"error\":\"malformed request: expected value\",\"ok\":false}\n".to_vec();
    let e = hs(raw_server(legacy, vec![])).await.unwrap_err();
    assert!(
        matches!(e, HandshakeError::Frame(FrameError::LegacyPeer)),
        "{e}"
    );

    let e = hs(raw_server(vec![b'z'; 200_000], vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HandshakeError::Frame(FrameError::NoPreamble(_))),
        "{e}"
    );

    let not_hello = [PREAMBLE.to_vec(), encode(1, Kind::Close, &[])].concat();
    let e = hs(raw_server(not_hello, vec![])).await.unwrap_err();
    assert!(e.to_string().contains("expected a hello"), "{e}");

    // Stale bytes of an earlier connection before the preamble are skipped, and so is
    // a whole stale answer (preamble, hello with another nonce, frames) before ours.
    let stale = |nonce| {
        [
            b"old frame bytes".to_vec(),
            common::server_hello_for(Some(12345), 1, 1, "stale"),
            encode(1, Kind::Control, br#"{"type":"pong"}"#),
            common::server_hello_for(nonce, 1, 1, "raw-agent"),
        ]
        .concat()
    };
    let conn = hs(raw_server_with(stale, vec![]))
        .await
        .expect("resynchronised");
    assert_eq!(conn.peer().software, "raw-agent");
}

#[tokio::test]
async fn sessions_fail_with_the_reason_when_the_connection_drops() {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
    let t = std::thread::spawn(move || {
        let mut b = b;
        let mut buf = [0u8; 4096];
        let n = b.read(&mut buf).unwrap_or(0);
        let nonce = common::client_nonce(&buf[..n]);
        let _ = b.write_all(&common::server_hello_for(nonce, 1, 1, "raw-agent"));
        let _ = b.read(&mut buf); // the open
        drop(b);
    });
    let conn = client(a).await;
    let s = conn.open(&exec()).expect("open");
    let e = s.control().await.unwrap_err();
    assert!(
        matches!(e, SessionError::Lost(ref r) if r.contains("closed the channel")),
        "{e}"
    );
    assert!(conn.is_closed());
    assert!(matches!(conn.open(&exec()), Err(SessionError::Lost(_))));
    t.join().expect("peer");
}

/// A byte stream like a virtio-serial port: scripted reads, then a failure.
struct Port(std::collections::VecDeque<Vec<u8>>);

impl Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.pop_front() {
            Some(mut chunk) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
                Ok(n)
            }
            None => {
                // Give the last sessions' threads time to answer before the port dies.
                std::thread::sleep(Duration::from_millis(500));
                Err(std::io::Error::other("the port went away"))
            }
        }
    }
}

/// What a port's connections wrote, shared with the test.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_port_serves_host_after_host_and_resynchronises_on_a_reconnect() {
    let hello = {
        let h = serde_json::to_vec(&Hello::new(Role::Client, "host")).expect("json");
        [PREAMBLE.to_vec(), encode(0, Kind::Hello, &h)].concat()
    };
    let ping = |id| encode(id, Kind::Open, br#"{"type":"ping"}"#);
    let mut script = std::collections::VecDeque::new();
    // Host 1 pings, then leaves (end of file: nobody connected).
    script.push_back([hello.clone(), ping(1)].concat());
    script.push_back(Vec::new());
    // Host 2 pings; host 3 connects before the guest saw host 2 leave: its preamble
    // comes where host 2's next frame would have. Bytes arrive one at a time.
    for b in [hello.clone(), ping(1), hello.clone(), ping(1)].concat() {
        script.push_back(vec![b]);
    }
    let sink = Sink::default();
    let mut ends = Vec::new();
    let handler = common::TestHandler::default();
    let config = banger_channel::sync::ServerConfig {
        software: "port".into(),
        limits: Limits::default(),
    };
    let s2 = sink.clone();
    let e = banger_channel::sync::serve_port(
        Port(script),
        || Ok(Box::new(s2.clone()) as Box<dyn Write + Send>),
        &config,
        &handler,
        |r| ends.push(format!("{r:?}")),
    );
    assert!(e.to_string().contains("the port went away"), "{e}");
    // Three hellos back; host 3 got its pong (host 2's may have been cut off when host 3
    // arrived: host 2 was gone by then anyway).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = sink.0.lock().unwrap().clone();
        let starts: Vec<usize> = out
            .windows(PREAMBLE.len())
            .enumerate()
            .filter(|(_, w)| w == PREAMBLE)
            .map(|(i, _)| i)
            .collect();
        let pong_after = |from: usize| out[from..].windows(6).any(|w| w == b"\"pong\"");
        if starts.len() == 3 && pong_after(starts[2]) && pong_after(starts[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hellos at {starts:?}; ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ends.len(), 3, "{ends:?}");
}
