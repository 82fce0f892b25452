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
            if let Some(ret) = answer(cmd, &v)? {
                if cmd == command {
                    return Ok(ret);
                }
                break;
            }
        }
    }
    Ok(Value::Null)
}

/// What one message from QEMU says about `cmd`: its `return` value, its error, or
/// nothing yet (an event, which QEMU may send at any time).
fn answer(cmd: &str, v: &Value) -> Result<Option<Value>, QmpError> {
    if let Some(e) = v.get("error") {
        return Err(QmpError::Command {
            command: cmd.to_string(),
            desc: e["desc"].as_str().unwrap_or("unknown").to_string(),
        });
    }
    Ok(v.get("event")
        .is_none()
        .then(|| v.get("return").cloned())
        .flatten())
}

/// Longest QMP line read from QEMU: a QEMU taken over by its guest must not make the
/// daemon buffer without end.
const MAX_LINE: u64 = 1 << 20;

/// Run `commands` in order on one QMP connection, the first one's message carrying
/// `fd` (SCM_RIGHTS), and return the last one's `return` value. QEMU keeps a
/// descriptor passed with `getfd` per connection, so the command that uses it (such
/// as `migrate fd:NAME`) must follow on the same connection.
pub async fn execute_with_fd(
    socket: &Path,
    fd: std::os::fd::OwnedFd,
    commands: Vec<(&'static str, Option<Value>)>,
    timeout: Duration,
) -> Result<Value, QmpError> {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || fd_session(&socket, fd, &commands, timeout))
        .await
        .map_err(|e| QmpError::Protocol(format!("the QMP task failed: {e}")))?
}

fn fd_session(
    socket: &Path,
    fd: std::os::fd::OwnedFd,
    commands: &[(&'static str, Option<Value>)],
    timeout: Duration,
) -> Result<Value, QmpError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::{BufRead, Read, Write};
    use std::os::fd::AsRawFd;
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => QmpError::Timeout(timeout),
        _ => QmpError::Io(e),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut read_line = || -> Result<Option<Value>, QmpError> {
        let mut line = String::new();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(timed_out)?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|_| QmpError::Protocol(line.chars().take(200).collect()))
    };
    match read_line()? {
        Some(g) if g.get("QMP").is_some() => {}
        other => return Err(QmpError::Protocol(format!("no QMP greeting: {other:?}"))),
    }
    let mut last = Value::Null;
    let all = std::iter::once(("qmp_capabilities", None)).chain(commands.iter().cloned());
    for (i, (cmd, args)) in all.enumerate() {
        let mut msg = match args {
            Some(a) => json!({ "execute": cmd, "arguments": a }),
            None => json!({ "execute": cmd }),
        }
        .to_string();
        msg.push('\n');
        if i == 1 {
            let raw = [fd.as_raw_fd()];
            let iov = [std::io::IoSlice::new(msg.as_bytes())];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let sent = sendmsg::<()>(
                stream.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(|e| QmpError::Io(e.into()))?;
            stream
                .write_all(&msg.as_bytes()[sent..])
                .map_err(timed_out)?;
        } else {
            stream.write_all(msg.as_bytes()).map_err(timed_out)?;
        }
        last = loop {
            let Some(v) = read_line()? else {
                return Err(QmpError::Protocol("connection closed".into()));
            };
            if let Some(ret) = answer(cmd, &v)? {
                break ret;
            }
        };
    }
    Ok(last)
}
