//! The daemon's simple agent requests (ping, ports, shutdown) as JSON values, on top of
//! the channel client ([`crate::client`]). Each call uses its own short connection.
//!
//! A guest whose agent predates the channel (an image built by an older banger, or a
//! VM that kept running across a banger upgrade) answers the channel's preamble with
//! a JSON line; these calls then fall back to its one-line protocol ([`crate::legacy`]),
//! so such VMs still start, list their ports and stop.

use crate::client::{AgentClient, ClientError, Endpoint};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why an agent request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The socket could not be used.
    #[error("agent socket {0}")]
    Io(#[from] std::io::Error),
    /// No reply in time.
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The reply was not JSON or reported an error.
    #[error("the guest agent answered with an error: {0}")]
    Reply(String),
    /// The channel client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// How to reach a guest's agent: the VMM's virtio-serial socket (QEMU), or the host
/// side of a Firecracker vsock, which needs its `CONNECT <port>` handshake first.
#[derive(Debug, Clone, Copy)]
pub enum Channel<'a> {
    /// A unix socket connected straight to the guest's virtio-serial port.
    Serial(&'a Path),
    /// Firecracker's vsock unix socket; the agent listens on [`crate::vsock::AGENT_PORT`].
    Vsock(&'a Path),
}

impl<'a> Channel<'a> {
    /// The channel for a VM whose VMM backend is `backend` and agent socket `socket`.
    pub fn for_backend(backend: &str, socket: &'a Path) -> Self {
        if backend == "firecracker" {
            Channel::Vsock(socket)
        } else {
            Channel::Serial(socket)
        }
    }

    /// The same place as an owned [`Endpoint`] for [`AgentClient`].
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Channel::Serial(p) => Endpoint::Serial(p.to_path_buf()),
            Channel::Vsock(p) => Endpoint::Vsock(p.to_path_buf()),
        }
    }
}

/// Send `op` over the virtio-serial socket and return the reply object.
pub async fn request(socket: &Path, op: &str, timeout: Duration) -> Result<Value, AgentError> {
    request_on(Channel::Serial(socket), op, timeout).await
}

async fn ask(client: &AgentClient, op: &str) -> Result<Value, AgentError> {
    Ok(match op {
        "ping" => {
            let p = client.ping().await?;
            json!({
                "ok": true,
                "version": p.version,
                "protocol": p.protocol,
                "boot_id": p.boot_id,
                "uptime_s": p.uptime_s,
                "init": p.init,
            })
        }
        "ports" => json!({"ok": true, "ports": client.ports().await?}),
        "shutdown" => {
            client.shutdown().await?;
            json!({"ok": true})
        }
        other => return Err(AgentError::Reply(format!("unknown op {other:?}"))),
    })
}

/// Ask `op` (`ping`, `ports` or `shutdown`) over `ch` and return the reply object as
/// the old protocol shaped it (`{"ok": true, ...}`).
pub async fn request_on(ch: Channel<'_>, op: &str, timeout: Duration) -> Result<Value, AgentError> {
    let client = AgentClient::new(ch.endpoint()).with_connect_timeout(timeout);
    let started = Instant::now();
    let r = tokio::time::timeout(timeout, ask(&client, op))
        .await
        .map_err(|_| AgentError::Timeout(timeout))?;
    client.disconnect().await;
    match r {
        Err(AgentError::Client(ClientError::Legacy)) => {
            let left = timeout.saturating_sub(started.elapsed());
            crate::legacy::request(ch, op, left.max(Duration::from_millis(500))).await
        }
        r => r,
    }
}

/// Ping over the virtio-serial socket until the agent answers or `deadline` passes.
pub async fn wait_ready(socket: &Path, deadline: Duration) -> Result<Value, AgentError> {
    wait_ready_on(Channel::Serial(socket), deadline).await
}

/// Ping over `ch` until the agent answers or `deadline` passes; returns the ping reply.
pub async fn wait_ready_on(ch: Channel<'_>, deadline: Duration) -> Result<Value, AgentError> {
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(AgentError::Timeout(deadline));
        }
        match request_on(ch, "ping", left.min(Duration::from_secs(2))).await {
            Ok(v) => return Ok(v),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_channel::sync::{serve, ControlSink, Handler, ServerConfig, Session};
    use banger_channel::{Control, Limits, Open, Pong};
    use std::io::{BufRead, Write};

    /// A minimal agent: ping and ports.
    struct Mini;

    impl Handler for Mini {
        fn open(&self, req: Open, s: Session) -> ControlSink {
            let c = match req {
                Open::Ping => Control::Pong(Pong {
                    version: "t".into(),
                    protocol: 1,
                    boot_id: "b1".into(),
                    uptime_s: Some(1.5),
                    init: "agent".into(),
                }),
                _ => Control::Ports { ports: vec![22] },
            };
            let _ = s.send(&c);
            s.close();
            Box::new(|_| true)
        }
    }

    fn serve_std(s: std::os::unix::net::UnixStream) {
        let w = s.try_clone().unwrap();
        let config = ServerConfig {
            software: "mini".into(),
            limits: Limits::default(),
        };
        let _ = serve(s, Box::new(w), &config, &Mini);
    }

    #[tokio::test]
    async fn pings_and_lists_ports_over_a_serial_style_socket() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let s = s.unwrap();
                std::thread::spawn(move || serve_std(s));
            }
        });
        let v = wait_ready(&sock, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (v["ok"].as_bool(), v["boot_id"].as_str()),
            (Some(true), Some("b1"))
        );
        assert_eq!(v["init"], "agent");
        let v = request(&sock, "ports", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(v["ports"][0], 22);
        let e = request(&sock, "dance", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("dance"), "{e}");
    }

    #[tokio::test]
    async fn speaks_through_a_firecracker_style_vsock_socket() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("vsock.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = String::new();
            // One byte at a time: the CONNECT line, nothing of the channel after it.
            let mut r = std::io::BufReader::with_capacity(1, s.try_clone().unwrap());
            r.read_line(&mut line).unwrap();
            assert_eq!(line, format!("CONNECT {}\n", crate::vsock::AGENT_PORT));
            s.write_all(b"OK 1073741824\n").unwrap();
            serve_std(s);
        });
        let v = request_on(
            Channel::for_backend("firecracker", &sock),
            "ports",
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(v["ports"][0], 22);
    }

    #[tokio::test]
    async fn times_out_when_nobody_answers() {
        let t = tempfile::tempdir().unwrap();
        let r = wait_ready(&t.path().join("none.sock"), Duration::from_millis(300)).await;
        assert!(matches!(r, Err(AgentError::Timeout(_))));
    }
}
