//! The three QMP exchanges banger needs (greeting, capabilities, one command with or
//! without arguments), over
//! QEMU's unix socket. A full QAPI client (the `qapi` crate, generated from QEMU 10's
//! schema) is the plan once we need more than `quit`/`system_powerdown`/`query-status`.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing failed.
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU did not answer in time.
    #[error("QMP: QEMU did not answer within {0:?}")]
    Timeout(Duration),
    /// QEMU answered with an error object.
    #[error("QMP command {command} failed: {desc}")]
    Command {
        /// The command sent.
        command: String,
        /// QEMU's error description.
        desc: String,
    },
    /// QEMU closed the socket or sent something that is not QMP.
    #[error("QMP: unexpected reply: {0}")]
    Protocol(String),
}

/// Run one QMP `command` (after negotiating capabilities) and return its `return` value.
pub async fn execute(socket: &Path, command: &str, timeout: Duration) -> Result<Value, QmpError> {
    execute_with(socket, command, None, timeout).await
}

/// Run one QMP `command` with `arguments` (an object) and return its `return` value.
pub async fn execute_with(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, QmpError> {
    tokio::time::timeout(timeout, execute_inner(socket, command, arguments))
        .await
        .map_err(|_| QmpError::Timeout(timeout))?
}

async fn execute_inner(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, QmpError> {
    let stream = UnixStream::connect(socket).await?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = lines.next_line().await?.unwrap_or_default();
    if !greeting.contains("QMP") {
        return Err(QmpError::Protocol(greeting));
    }
    for cmd in ["qmp_capabilities", command] {
        let mut msg = match (&arguments, cmd == command) {
            (Some(a), true) => json!({ "execute": cmd, "arguments": a }),
            _ => json!({ "execute": cmd }),
        }
        .to_string();
        msg.push('\n');
        w.write_all(msg.as_bytes()).await?;
        loop {
            let Some(line) = lines.next_line().await? else {
                // `quit` closes the socket as its answer.
                if cmd == "quit" {
                    return Ok(Value::Null);
                }
                return Err(QmpError::Protocol("connection closed".into()));
            };
            let v: Value =
                serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line.clone()))?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    command: cmd.to_string(),
                    desc: e["desc"].as_str().unwrap_or("unknown").to_string(),
                });
            }
            if let Some(ret) = v.get("return") {
                if cmd == command {
                    return Ok(ret.clone());
                }
                break;
            }
        }
    }
    Ok(Value::Null)
}
