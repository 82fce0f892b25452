//! A hostile guest agent, driven through the daemon's real [`AgentGuest`]: after a
//! valid handshake it sends a giant frame header, an endless line, or garbage; before
//! it, only junk. Each exec fails with a clear error, and the daemon stops reading
//! (the hostile side's writes fail after a bounded amount), so its memory stays
//! bounded (`crates/channel/tests/bounded_memory.rs` measures the decoder itself).

use crate::vm::guest::{AgentGuest, Guest, Target};
use banger_channel::decoder::Decoder;
use banger_channel::{Kind, Limits, Open};
use banger_vmm::{Accel, Handles};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake agent does after reading the host's first bytes.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Valid handshake, then `junk` forever.
    AfterHandshake(&'static [u8]),
    /// No preamble at all: `junk` forever.
    NoPreamble(&'static [u8]),
}

/// Serve one connection on `sock`; returns how many junk bytes the daemon took.
fn hostile_agent(sock: &Path, b: Behaviour) -> tokio::task::JoinHandle<u64> {
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).await.unwrap();
        let junk = match b {
            Behaviour::AfterHandshake(junk) => {
                let frames = Decoder::new(Limits::default())
                    .decode_all(&buf[..n])
                    .unwrap_or_default();
                let hello = frames.iter().find(|f| f.kind == Kind::Hello).unwrap();
                let hello: banger_channel::Hello = serde_json::from_slice(&hello.payload).unwrap();
                let mut ours = banger_channel::Hello::new(banger_channel::Role::Server, "hostile");
                ours.nonce = hello.nonce;
                let json = serde_json::to_vec(&ours).unwrap();
                let mut bytes = banger_channel::limits::PREAMBLE.to_vec();
                bytes.extend(banger_channel::frame::encode(0, Kind::Hello, &json));
                s.write_all(&bytes).await.unwrap();
                // Wait for the open.
                let _ = s.read(&mut buf).await;
                junk
            }
            Behaviour::NoPreamble(junk) => junk,
        };
        let mut sent = 0u64;
        let chunk: Vec<u8> = junk.iter().copied().cycle().take(64 * 1024).collect();
        // Endless, until the daemon hangs up (or far past any limit).
        while sent < 256 * 1024 * 1024 {
            match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len() as u64,
                _ => break,
            }
        }
        sent
    })
}

fn handles(sock: PathBuf) -> Handles {
    Handles {
        backend: "qemu".into(),
        pid: 4242,
        control_socket: sock.with_extension("qmp"),
        agent_socket: sock,
        console_log: PathBuf::from("/nonexistent"),
        accel: Accel::Tcg,
        start_time: None,
        tag: None,
    }
}

/// Run an exec against a hostile agent; returns the error text and the bytes it sent.
async fn exec_against(b: Behaviour) -> (String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = hostile_agent(&sock, b);
    let guest = AgentGuest::new();
    let h = handles(sock);
    let t = Target {
        id: "vm1",
        name: "dev",
        handles: &h,
    };
    let open = Open::Exec(banger_guest::client::argv(["true"]));
    let err = match guest.open(t, &open).await {
        Err(e) => e.to_string(),
        Ok(s) => match tokio::time::timeout(Duration::from_secs(30), s.control()).await {
            Ok(Err(e)) => e.to_string(),
            other => panic!("a hostile agent's answer was taken: {other:?}"),
        },
    };
    guest.forget("vm1");
    let sent = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("the daemon kept reading a hostile agent")
        .unwrap();
    (err, sent)
}

/// What a hostile agent may push before the daemon stops reading: its decoder's one
/// frame (refused at the header) plus the sockets' buffers.
const BOUND: u64 = 16 * 1024 * 1024;

#[tokio::test]
async fn a_giant_frame_fails_the_exec_clearly() {
    let (err, sent) = exec_against(Behaviour::AfterHandshake(&[
        0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1, 0x11,
    ]))
    .await;
    assert!(err.contains("exceeds"), "{err}");
    assert!(sent < BOUND, "{sent}");
}

#[tokio::test]
async fn an_endless_line_fails_the_exec_clearly() {
    let (err, sent) = exec_against(Behaviour::AfterHandshake(b"aaaaaaaaaaaaaaaa")).await;
    // Read as a frame header: kind 0x61 is refused before the length is.
    assert!(err.contains("broke the framing"), "{err}");
    assert!(sent < BOUND, "{sent}");
}

#[tokio::test]
async fn garbage_frames_fail_the_exec_clearly() {
    // Well-sized frames of an unknown kind on a session nobody opened.
    let (err, sent) = exec_against(Behaviour::AfterHandshake(&[
        0, 0, 0, 1, 0, 0, 0, 9, 0x7f, 0x42,
    ]))
    .await;
    assert!(
        err.contains("protocol violation") || err.contains("framing"),
        "{err}"
    );
    assert!(sent < BOUND, "{sent}");
}

#[tokio::test]
async fn junk_instead_of_the_protocol_fails_the_exec_clearly() {
    let (err, sent) = exec_against(Behaviour::NoPreamble(b"no protocol here, just text ")).await;
    assert!(err.contains("does not speak"), "{err}");
    assert!(sent < BOUND, "{sent}");
}
