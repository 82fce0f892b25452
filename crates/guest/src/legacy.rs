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
        let mut r = BufReader::new(r);
        for _ in 0..=MAX_STALE {
            // Each line is capped on its own: a guest that never ends its line costs
            // MAX_LINE bytes, then the request fails.
            let mut reply = Vec::new();
            let n = (&mut r)
                .take(MAX_LINE)
                .read_until(b'\n', &mut reply)
                .await?;
            if n == 0 {
                break;
            }
            if !reply.ends_with(b"\n") && n as u64 == MAX_LINE {
                return Err(AgentError::Reply(format!(
                    "the old agent sent a reply line longer than {} KiB",
                    MAX_LINE >> 10
                )));
            }
            let text = String::from_utf8_lossy(&reply);
            let v: Value = serde_json::from_str(text.trim())
                .map_err(|_| AgentError::Reply(format!("not a JSON reply: {}", quote(&text))))?;
            let err = v["error"].as_str().unwrap_or_default();
            if err.starts_with("malformed request") || err == "empty request" {
                continue;
            }
            if v["ok"] != Value::Bool(true) {
                return Err(AgentError::Reply(if err.is_empty() {
                    quote(&text)
                } else {
                    quote(err)
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

/// Most characters of guest text quoted in an error.
const QUOTED: usize = 200;

/// Guest text for an error message: trimmed, at most [`QUOTED`] characters, control
/// characters escaped (it ends up in logs and on terminals).
fn quote(text: &str) -> String {
    let t = text.trim();
    let cut: String = t.chars().take(QUOTED).collect();
    let more = if cut.len() < t.len() { "…" } else { "" };
    format!("{cut:?}{more}")
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

    /// An old agent that answers every connection with `reply`, then keeps the
    /// connection open (`endless`: writes `x` forever instead).
    async fn hostile_old_agent(sock: &std::path::Path, reply: Vec<u8>, endless: bool) {
        let l = UnixListener::bind(sock).unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let (_r, mut w) = s.into_split();
                    let _ = w.write_all(&reply).await;
                    let chunk = vec![b'x'; 64 << 10];
                    while endless && w.write_all(&chunk).await.is_ok() {}
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
    }

    #[tokio::test]
    async fn a_reply_line_that_never_ends_fails_after_one_bounded_line() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        hostile_old_agent(&sock, b"{\"ok\":".to_vec(), true).await;
        let e = request(Channel::Serial(&sock), "ping", Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 64 KiB"), "{e}");
        assert!(
            e.len() < 1024,
            "the error carries the guest's bytes: {} bytes",
            e.len()
        );
    }

    #[tokio::test]
    async fn guest_text_in_errors_is_short_and_escaped() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        let mut huge = b"{\"ok\":false,\"error\":\"".to_vec();
        huge.extend(std::iter::repeat_n(b'e', 60_000));
        huge.extend(b"\\u001b[2J\"}\n");
        hostile_old_agent(&sock, huge, false).await;
        let e = request(Channel::Serial(&sock), "ping", Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1024, "{} bytes", e.len());
        let sock2 = t.path().join("agent2.sock");
        hostile_old_agent(&sock2, b"\x1b[2Jnot json\n".to_vec(), false).await;
        let e = request(Channel::Serial(&sock2), "ping", Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a JSON reply") && !e.contains('\x1b'), "{e}");
    }
}
