//! A small sync server with a test handler, and a tokio client connected to it.
#![allow(dead_code)]

use banger_channel::sync::{
    serve, ControlSink, Handler, Inbound, ServeError, ServerConfig, Session,
};
use banger_channel::tokio::{Config, Connection};
use banger_channel::{
    Control, Done, ErrorKind, ErrorReply, ExitStatus, Limits, Open, Pong, Stream,
};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests, by what they carry:
/// * `Put { dir: "echo" }`: stdin comes back on stdout; its length on stderr; `Done`.
/// * `Put { dir: "wait" }`: like echo, but reads stdin only after a control message.
/// * `Get { path: "big:N" }`: N bytes of a pattern on stdout, counted in `written`.
/// * `Exec`: `Started`, then `Exit` with the signal of the first `Signal` received.
#[derive(Default)]
pub struct TestHandler {
    pub written: Arc<AtomicU64>,
}

pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn echo(s: &Session) -> std::io::Result<u64> {
    let mut r = s.reader();
    let mut w = s.writer(Stream::Out);
    let mut buf = vec![0u8; 10_000];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    s.eof(Stream::Out)?;
    s.write_all(Stream::Err, n.to_string().as_bytes())?;
    s.eof(Stream::Err)?;
    Ok(n)
}

impl Handler for TestHandler {
    fn open(&self, req: Open, s: Session) -> ControlSink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Inbound>(4);
        let written = self.written.clone();
        std::thread::spawn(move || {
            let _ = s.send(&Control::Started { pid: None });
            match req {
                Open::Ping => {
                    let _ = s.send(&Control::Pong(Pong {
                        version: "test".into(),
                        protocol: 1,
                        boot_id: "b".into(),
                        uptime_s: None,
                        init: "test".into(),
                    }));
                }
                Open::Put(p) => {
                    if p.dir == "wait" {
                        let _ = rx.recv();
                    }
                    if let Ok(n) = echo(&s) {
                        let _ = s.send(&Control::Done(Done {
                            entries: 0,
                            bytes: n,
                        }));
                    }
                }
                Open::Get(g) => {
                    let n: u64 = g
                        .path
                        .strip_prefix("big:")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let mut i = 0u64;
                    while i < n {
                        let k = (n - i).min(10_000);
                        let chunk: Vec<u8> = (i..i + k).map(pattern).collect();
                        if s.write_all(Stream::Out, &chunk).is_err() {
                            return;
                        }
                        i += k;
                        written.store(i, Ordering::SeqCst);
                    }
                    let _ = s.eof(Stream::Out);
                    let _ = s.send(&Control::Done(Done {
                        entries: 0,
                        bytes: n,
                    }));
                }
                Open::Exec(_) => loop {
                    match rx.recv() {
                        Ok(Inbound::Control(Control::Signal { signal })) => {
                            let _ = s.send(&Control::Exit(ExitStatus {
                                code: None,
                                signal: Some(signal),
                                core_dumped: false,
                            }));
                            break;
                        }
                        Ok(Inbound::Control(_)) => {}
                        Ok(Inbound::Closed(_)) | Err(_) => return,
                    }
                },
                _ => {
                    let _ = s.send(&Control::Error(ErrorReply::new(
                        ErrorKind::Invalid,
                        "not in this test",
                    )));
                }
            }
            s.close();
        });
        Box::new(move |m| tx.try_send(m).is_ok())
    }
}

pub struct Server {
    pub written: Arc<AtomicU64>,
    pub done: std::thread::JoinHandle<Result<(), ServeError>>,
}

/// A sync server on one end of a socketpair; the other end for the client.
pub fn server(limits: Limits) -> (Server, std::os::unix::net::UnixStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let handler = TestHandler::default();
    let written = handler.written.clone();
    let done = std::thread::spawn(move || {
        let w = b.try_clone().expect("clone");
        let config = ServerConfig {
            software: "test-server".into(),
            limits,
        };
        serve(b, Box::new(w), &config, &handler)
    });
    (Server { written, done }, a)
}

pub fn tokio_stream(s: std::os::unix::net::UnixStream) -> tokio::net::UnixStream {
    s.set_nonblocking(true).expect("nonblocking");
    tokio::net::UnixStream::from_std(s).expect("tokio stream")
}

pub async fn client(s: std::os::unix::net::UnixStream) -> Connection {
    Connection::handshake(tokio_stream(s), Config::client("test-client"))
        .await
        .expect("handshake")
}

/// Read a whole inbound stream.
pub async fn read_all(s: &banger_channel::tokio::Session, stream: Stream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.read(stream).await.expect("read") {
        out.extend(chunk);
    }
    out
}

/// The nonce in a client's hello among `bytes` (what a raw server read).
pub fn client_nonce(bytes: &[u8]) -> Option<u64> {
    let frames = banger_channel::decoder::Decoder::new(Limits::default())
        .decode_all(bytes)
        .unwrap_or_default();
    let hello = frames
        .iter()
        .find(|f| f.kind == banger_channel::Kind::Hello)?;
    serde_json::from_slice::<banger_channel::Hello>(&hello.payload)
        .ok()?
        .nonce
}

/// A server's preamble and hello answering `nonce`.
pub fn server_hello_for(nonce: Option<u64>, protocol: u32, min: u32, software: &str) -> Vec<u8> {
    use banger_channel::frame::{encode, Kind};
    let mut h = banger_channel::Hello::new(banger_channel::Role::Server, software);
    h.protocol = protocol;
    h.min_protocol = min;
    h.nonce = nonce;
    let json = serde_json::to_vec(&h).expect("json");
    [
        banger_channel::limits::PREAMBLE.to_vec(),
        encode(0, Kind::Hello, &json),
    ]
    .concat()
}
