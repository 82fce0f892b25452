//! Host side of Firecracker's hybrid vsock.
//!
//! Firecracker does not use the host kernel's vhost-vsock: the guest's virtio-vsock
//! device ends in a unix socket on the host (`uds_path` of `PUT /vsock`). To reach a
//! port in the guest, a host process connects to that socket, writes
//! `CONNECT <port>\n`, and gets `OK <host_port>\n` once the guest accepted; from then
//! on the unix stream *is* the vsock connection. If nothing in the guest listens on the
//! port, Firecracker closes the unix connection without a reply
//! (docs/vsock.md, "Host-Initiated Connections").
//!
//! The acknowledgement is read one byte at a time on purpose: the guest may speak
//! right after accepting, and a buffered reader would swallow those first bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The guest vsock port banger's agent listens on (above the privileged range, clear of
/// the ports other guest tools commonly claim).
pub const AGENT_PORT: u32 = banger_contract::agent::VSOCK_PORT;

/// Longest acknowledgement line we accept (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 64;

/// Why a vsock connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The unix socket could not be reached.
    #[error("cannot connect to vsock socket {path}: {source}; check that the VM's firecracker is running")]
    Connect {
        /// The vsock unix socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Firecracker closed the connection without a reply: nothing in the guest listens
    /// on the port (yet).
    #[error("nothing in the guest accepted vsock port {port}: the guest is still booting or its service is not running")]
    NotListening {
        /// Guest port.
        port: u32,
    },
    /// The reply was not `OK <port>`.
    #[error("vsock CONNECT {port} got an unexpected reply {reply:?}: the socket is not a Firecracker vsock socket")]
    BadReply {
        /// Guest port.
        port: u32,
        /// What came back (lossy UTF-8).
        reply: String,
    },
    /// No acknowledgement in time.
    #[error("vsock CONNECT {port} was not acknowledged within {waited:?}: the guest or firecracker is stuck")]
    Timeout {
        /// Guest port.
        port: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// Reading or writing the handshake failed.
    #[error("vsock handshake for port {port}: {source}")]
    Io {
        /// Guest port.
        port: u32,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A connected stream to a guest vsock port.
#[derive(Debug)]
pub struct VsockStream {
    /// The unix stream, now carrying the vsock connection's bytes.
    pub stream: UnixStream,
    /// The host-side port Firecracker assigned (from `OK <host_port>`).
    pub host_port: u32,
}

/// Connect to guest `port` through the Firecracker vsock socket `uds`, giving the whole
/// handshake at most `timeout`.
pub async fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<VsockStream, VsockError> {
    match tokio::time::timeout(timeout, handshake(uds, port)).await {
        Ok(r) => r,
        Err(_) => Err(VsockError::Timeout {
            port,
            waited: timeout,
        }),
    }
}

async fn handshake(uds: &Path, port: u32) -> Result<VsockStream, VsockError> {
    let mut stream = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.to_path_buf(),
            source,
        })?;
    let io = |source| VsockError::Io { port, source };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(0) if line.is_empty() => return Err(VsockError::NotListening { port }),
            // A reset instead of a clean close means the same: the guest refused.
            Err(e) if line.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(VsockError::NotListening { port })
            }
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(io(e)),
        }
        if line.len() > MAX_REPLY {
            break;
        }
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    let host_port = reply
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse::<u32>().ok())
        .ok_or(VsockError::BadReply { port, reply })?;
    Ok(VsockStream { stream, host_port })
}

/// Retry [`connect`] until the guest accepts or `deadline` passes: for readiness waits,
/// where "nothing listens yet" is the normal state of a booting guest. Errors that
/// retrying cannot fix (a reply that is not Firecracker's) end the wait at once.
pub async fn wait_connect(
    uds: &Path,
    port: u32,
    deadline: Duration,
) -> Result<VsockStream, VsockError> {
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(VsockError::Timeout {
                port,
                waited: deadline,
            });
        }
        match connect(uds, port, left.min(Duration::from_secs(2))).await {
            Ok(s) => return Ok(s),
            Err(e @ VsockError::BadReply { .. }) => return Err(e),
            Err(e) if start.elapsed() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// How the peer (standing in for Firecracker's vsock muxer) answers a CONNECT.
    #[derive(Clone, Copy)]
    enum Peer {
        /// `OK 1073741824\n` immediately followed by the guest's greeting, then echo.
        Accept,
        /// Close without a reply (no guest listener), `n` times, then accept.
        CloseFirst(usize),
        /// Reply with something that is not `OK <port>`.
        Garbage,
        /// Read the request and never answer.
        Silent,
    }

    /// Serve `peer` on a fresh socket; returns it and the CONNECT lines received.
    fn serve(dir: &Path, peer: Peer) -> (PathBuf, Arc<std::sync::Mutex<Vec<String>>>) {
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::new(r);
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    s.lock().unwrap().push(line.clone());
                    let accept = match peer {
                        Peer::Accept => true,
                        Peer::CloseFirst(k) => n >= k,
                        Peer::Garbage => {
                            w.write_all(b"HTTP/1.1 400 Bad Request\r\n").await.unwrap();
                            return;
                        }
                        Peer::Silent => {
                            std::future::pending::<()>().await;
                            return;
                        }
                    };
                    if !accept {
                        return; // dropping both halves closes the connection
                    }
                    // Ack and the guest's first bytes in one write: the client must
                    // not swallow the greeting while reading the ack.
                    w.write_all(b"OK 1073741824\nhello from the guest\n")
                        .await
                        .unwrap();
                    let mut echo = String::new();
                    while r.read_line(&mut echo).await.unwrap_or(0) > 0 {
                        w.write_all(echo.as_bytes()).await.unwrap();
                        echo.clear();
                    }
                });
            }
        });
        (path, seen)
    }

    #[tokio::test]
    async fn accepted_connection_carries_the_guest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, seen) = serve(dir.path(), Peer::Accept);
        let v = connect(&sock, 52, Duration::from_secs(2)).await.unwrap();
        assert_eq!(v.host_port, 1_073_741_824);
        assert_eq!(seen.lock().unwrap().as_slice(), ["CONNECT 52\n"]);
        let (r, mut w) = v.stream.into_split();
        let mut lines = BufReader::new(r).lines();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("hello from the guest")
        );
        w.write_all(b"{\"op\":\"ping\"}\n").await.unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("{\"op\":\"ping\"}")
        );
    }

    #[tokio::test]
    async fn a_closed_connection_means_nothing_listens() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _) = serve(dir.path(), Peer::CloseFirst(usize::MAX));
        let e = connect(&sock, AGENT_PORT, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(e, VsockError::NotListening { port } if port == AGENT_PORT),
            "{e}"
        );
        assert!(e.to_string().contains("10789"), "{e}");
    }

    #[tokio::test]
    async fn a_non_ok_reply_is_refused_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, seen) = serve(dir.path(), Peer::Garbage);
        let e = wait_connect(&sock, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, VsockError::BadReply { .. }), "{e}");
        assert!(e.to_string().contains("HTTP/1.1 400"), "{e}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _) = serve(dir.path(), Peer::Silent);
        let t = Instant::now();
        let e = connect(&sock, 52, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, VsockError::Timeout { .. }), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_missing_socket_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("absent.sock");
        let e = connect(&sock, 52, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, VsockError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("absent.sock"), "{e}");
    }

    #[tokio::test]
    async fn wait_connect_retries_until_the_guest_listens() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, seen) = serve(dir.path(), Peer::CloseFirst(3));
        let v = wait_connect(&sock, 52, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v.host_port, 1_073_741_824);
        assert_eq!(seen.lock().unwrap().len(), 4);
        // And it gives up at the deadline when nobody ever listens.
        let dir2 = tempfile::tempdir().unwrap();
        let (sock2, _) = serve(dir2.path(), Peer::CloseFirst(usize::MAX));
        let t = Instant::now();
        let e = wait_connect(&sock2, 52, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                e,
                VsockError::NotListening { .. } | VsockError::Timeout { .. }
            ),
            "{e}"
        );
    }
}
