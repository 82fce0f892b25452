//! Host side of the guest agent channel: one JSON request line, one JSON reply line,
//! over the unix socket the VMM exposes for the guest's virtio-serial port.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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
}

/// Send `{"op": op}` over the virtio-serial socket and return the reply object.
pub async fn request(socket: &Path, op: &str, timeout: Duration) -> Result<Value, AgentError> {
    request_on(Channel::Serial(socket), op, timeout).await
}

/// Send `{"op": op}` over `ch` and return the reply object.
pub async fn request_on(ch: Channel<'_>, op: &str, timeout: Duration) -> Result<Value, AgentError> {
    let fut = async {
        let s = match ch {
            Channel::Serial(p) => UnixStream::connect(p).await?,
            Channel::Vsock(p) => {
                crate::vsock::connect(p, crate::vsock::AGENT_PORT, timeout)
                    .await
                    .map_err(|e| AgentError::Io(std::io::Error::other(e.to_string())))?
                    .stream
            }
        };
        let (r, mut w) = s.into_split();
        let mut line = serde_json::json!({ "op": op }).to_string();
        line.push('\n');
        w.write_all(line.as_bytes()).await?;
        let mut lines = BufReader::new(r).lines();
        let reply = lines.next_line().await?.unwrap_or_default();
        let v: Value =
            serde_json::from_str(&reply).map_err(|_| AgentError::Reply(reply.clone()))?;
        if v["ok"] != Value::Bool(true) {
            return Err(AgentError::Reply(
                v["error"].as_str().unwrap_or(&reply).to_string(),
            ));
        }
        Ok(v)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| AgentError::Timeout(timeout))?
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
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn pings_a_peer_that_speaks_the_protocol() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        let l = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            for reply in [
                r#"{"ok":false,"error":"busy"}"#,
                r#"{"ok":true,"boot_id":"b1"}"#,
            ] {
                let (s, _) = l.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                let req = lines.next_line().await.unwrap().unwrap();
                assert_eq!(req, r#"{"op":"ping"}"#);
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        });
        assert!(matches!(
            request(&sock, "ping", Duration::from_secs(1)).await,
            Err(AgentError::Reply(e)) if e == "busy"
        ));
        let v = wait_ready(&sock, Duration::from_secs(3)).await.unwrap();
        assert_eq!(v["boot_id"], "b1");
    }

    #[tokio::test]
    async fn speaks_through_a_firecracker_style_vsock_socket() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("vsock.sock");
        let l = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let connect = lines.next_line().await.unwrap().unwrap();
            assert_eq!(connect, format!("CONNECT {}", crate::vsock::AGENT_PORT));
            w.write_all(b"OK 1073741824\n").await.unwrap();
            let req = lines.next_line().await.unwrap().unwrap();
            assert_eq!(req, r#"{"op":"ports"}"#);
            w.write_all(b"{\"ok\":true,\"ports\":[22]}\n")
                .await
                .unwrap();
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
