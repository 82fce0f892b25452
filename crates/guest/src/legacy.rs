//! The agent protocol before the channel: one JSON request line, one JSON reply line.
//! Only for guests whose agent is older than this banger (see [`crate::agent`]).
//!
//! Over virtio-serial the old agent still holds what our channel attempt sent after
//! the preamble (the hello frame, no newline): if we reconnect before it saw the end of
//! that connection, our request would be glued to that junk. So the request starts
//! with a newline, which ends the junk line, and the "malformed request" / "empty
//! request" replies that earns (and any owed to the previous connection) are skipped:
//! our own request is never malformed.

use crate::agent::{AgentError, Channel};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest reply line accepted.
const MAX_LINE: u64 = 64 << 10;
/// Stale lines skipped before giving up.
const MAX_STALE: usize = 4;

/// Send `{"op": op}` and return the reply object.
pub async fn request(ch: Channel<'_>, op: &str, timeout: Duration) -> Result<Value, AgentError> {
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
        let mut line = format!("\n{}\n", serde_json::json!({ "op": op }));
        line.shrink_to_fit();
        w.write_all(line.as_bytes()).await?;
        let mut r = BufReader::new(r.take(MAX_LINE * (MAX_STALE as u64 + 1)));
        for _ in 0..=MAX_STALE {
            let mut reply = String::new();
            if r.read_line(&mut reply).await? == 0 {
                break;
            }
            let v: Value = serde_json::from_str(reply.trim())
                .map_err(|_| AgentError::Reply(reply.trim().to_string()))?;
            let err = v["error"].as_str().unwrap_or_default();
            if err.starts_with("malformed request") || err == "empty request" {
                continue;
            }
            if v["ok"] != Value::Bool(true) {
                return Err(AgentError::Reply(if err.is_empty() {
                    reply.trim().to_string()
                } else {
                    err.to_string()
                }));
            }
            return Ok(v);
        }
        Err(AgentError::Reply(
            "the old agent sent no reply to our request".into(),
        ))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| AgentError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn an_old_agent_still_answers_ping_through_the_fallback() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        let l = UnixListener::bind(&sock).unwrap();
        // An old serial agent: every line gets a reply; the first connection gets the
        // channel's preamble, and its "malformed" reply arrives on the next connection.
        tokio::spawn(async move {
            let mut owed = 0;
            loop {
                let (s, _) = l.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                for _ in 0..owed {
                    let _ = w
                        .write_all(b"{\"error\":\"malformed request: x\",\"ok\":false}\n")
                        .await;
                }
                owed = 0;
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with('{') {
                        let reply = if line.contains("ports") {
                            "{\"ok\":true,\"ports\":[22]}\n"
                        } else {
                            "{\"ok\":true,\"boot_id\":\"old\"}\n"
                        };
                        let _ = w.write_all(reply.as_bytes()).await;
                    } else {
                        // The preamble line: answered now, and owed once more.
                        let _ = w
                            .write_all(b"{\"error\":\"malformed request: y\",\"ok\":false}\n")
                            .await;
                        owed += 1;
                    }
                }
            }
        });
        let v = crate::agent::request(&sock, "ping", Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(v["boot_id"], "old");
        let v = crate::agent::request_on(Channel::Serial(&sock), "ports", Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(v["ports"][0], 22);
    }
}
