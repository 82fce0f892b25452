//! The accept loop and the per-connection request loop.
//!
//! One task per connection; within a connection requests are answered strictly
//! in order, which keeps the client trivial (no reordering by id). Handlers run
//! in their own task so a client that disconnects mid-`vm.create` cannot cancel
//! the daemon half-way through a lifecycle step.

use super::context::{CallCtx, ProgressSink};
use super::limits::{Claim, InFlight, ServeOptions};
use super::router::{unknown_method, Router};
use crate::error::{ErrorCode, RpcError};
use crate::methods::Progress;
use crate::upgrade::{UpgradeFn, UpgradeSlot, Upgraded};
use crate::wire::{
    encode, json_kind, new_op_id, valid_op_id, ErrorLine, ProgressLine, Request, ResultLine,
};
use crate::{MAX_REQUEST_LINE, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

type Conn = Framed<UnixStream, LinesCodec>;

/// Who may talk to the daemon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access {
    /// The daemon's own effective uid.
    pub owner: u32,
    /// Whether root may connect too (it could read the state anyway).
    pub allow_root: bool,
}

impl Access {
    fn owner_or_root() -> Self {
        Self {
            owner: nix::unistd::geteuid().as_raw(),
            allow_root: true,
        }
    }

    fn allows(self, uid: u32) -> bool {
        uid == self.owner || (self.allow_root && uid == 0)
    }
}

/// Serve `router` on `listener` until `shutdown` resolves.
///
/// Only the daemon's own user and root may connect (SO_PEERCRED); anyone else
/// gets one `unauthorized` line and is disconnected. The socket's 0600 mode is
/// a second fence, not the only one.
///
/// On shutdown the loop stops accepting, lets every in-flight call finish and
/// send its final line, then returns. Wrap it in a timeout if a bounded stop
/// matters more than finishing calls. Every line is written within
/// [`ServeOptions::write_timeout`], so a client that never reads cannot hold
/// shutdown up beyond that.
///
/// Uses [`ServeOptions::default`]; see [`serve_with_options`].
pub async fn serve(
    listener: UnixListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_options(listener, router, shutdown, ServeOptions::default()).await;
}

/// [`serve`] with explicit connection, read and write bounds.
pub async fn serve_with_options(
    listener: UnixListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
    opts: ServeOptions,
) {
    serve_with(listener, router, shutdown, Access::owner_or_root(), opts).await;
}

pub(crate) async fn serve_with(
    listener: UnixListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
    access: Access,
    opts: ServeOptions,
) {
    let stop = CancellationToken::new();
    let in_flight = InFlight::default();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if conns.len() >= opts.max_connections => {
                    refuse_busy(stream, opts.max_connections);
                }
                Ok((stream, _)) => {
                    let conn = Connection {
                        router: Arc::clone(&router),
                        access,
                        opts,
                        in_flight: in_flight.clone(),
                    };
                    conns.spawn(conn.run(stream, stop.child_token()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the
                    // daemon must keep serving once descriptors free up.
                    warn!(error = %e, "accepting an RPC connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => log_join(done),
        }
    }
    drop(listener);
    stop.cancel();
    while let Some(done) = conns.join_next().await {
        log_join(done);
    }
}

/// One error line, written only if the socket takes it at once, then close: a
/// refused connection costs no task and no wait (and only a debug log line, so a
/// connection flood cannot flood the log either).
fn refuse_busy(stream: UnixStream, max: usize) {
    let op_id = new_op_id();
    debug!(op_id = %op_id, max, "refused an RPC connection: at the connection cap");
    let err = RpcError::operation_failed(format!(
        "bangerd is serving its maximum of {max} connections; close other banger commands (or scripts holding connections open) and retry"
    ))
    .with_op_id(op_id);
    let line = ErrorLine {
        v: PROTOCOL_VERSION,
        id: 0,
        error: &err,
    };
    let mut bytes = encode(0, &line).into_bytes();
    bytes.push(b'\n');
    let _ = stream.try_write(&bytes);
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        error!(error = %e, "an RPC connection task failed");
    }
}

/// What every connection task shares.
struct Connection {
    router: Arc<Router>,
    access: Access,
    opts: ServeOptions,
    in_flight: InFlight,
}

impl Connection {
    async fn run(self, stream: UnixStream, stop: CancellationToken) {
        let wt = self.opts.write_timeout;
        let peer_uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                warn!(error = %e, "could not read the peer credentials of an RPC connection; closing it");
                return;
            }
        };
        let mut conn = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST_LINE));
        if !self.access.allows(peer_uid) {
            let op_id = new_op_id();
            warn!(op_id = %op_id, peer_uid, "refused an RPC connection from another user");
            let err = RpcError::new(
                ErrorCode::Unauthorized,
                format!(
                    "uid {peer_uid} may not use this bangerd (it serves uid {}); run banger as that user or as root",
                    self.access.owner
                ),
            )
            .with_op_id(op_id);
            if send_error(&mut conn, wt, 0, &err).await.is_ok() {
                close_gracefully(conn).await;
            }
            return;
        }
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => break,
                next = tokio::time::timeout(self.opts.read_timeout, conn.next()) => next,
            };
            let next = match next {
                Ok(next) => next,
                Err(_) if conn.read_buffer().is_empty() => {
                    debug!("closing an idle RPC connection");
                    break;
                }
                Err(_) => {
                    let err = reject(
                        RpcError::bad_request(format!(
                            "request line not completed within {} s; closing the connection",
                            self.opts.read_timeout.as_secs()
                        )),
                        None,
                    );
                    if send_error(&mut conn, wt, 0, &err).await.is_ok() {
                        close_gracefully(conn).await;
                    }
                    return;
                }
            };
            let outcome = match next {
                None => break,
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => match self.handle_line(&mut conn, peer_uid, &line).await {
                    Ok(Some(upgrade)) => {
                        // The connection is the handler's now: no more lines, no
                        // read timeout; it ends with the daemon's shutdown at the latest.
                        let parts = conn.into_parts();
                        let io = Upgraded::new(parts.io, parts.read_buf.to_vec());
                        tokio::select! {
                            () = upgrade(io) => {}
                            () = stop.cancelled() => debug!("daemon stopping: ending an upgraded connection"),
                        }
                        return;
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    let err = reject(
                        RpcError::bad_request(format!(
                            "request line longer than {MAX_REQUEST_LINE} bytes; closing the connection"
                        )),
                        None,
                    );
                    if send_error(&mut conn, wt, 0, &err).await.is_ok() {
                        close_gracefully(conn).await;
                    }
                    return;
                }
                Some(Err(LinesCodecError::Io(e)))
                    if e.kind() == std::io::ErrorKind::InvalidData =>
                {
                    let err = reject(
                        RpcError::bad_request(
                            "request line is not valid UTF-8; closing the connection",
                        ),
                        None,
                    );
                    if send_error(&mut conn, wt, 0, &err).await.is_ok() {
                        close_gracefully(conn).await;
                    }
                    return;
                }
                Some(Err(LinesCodecError::Io(e))) => {
                    debug!(error = %e, "RPC connection read failed");
                    break;
                }
            };
            if let Err(e) = outcome {
                debug!(error = %e, "RPC client went away (or stopped reading) before its reply was written");
                break;
            }
        }
    }
}

/// A request line that passed the envelope checks, as [`parse_request`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The request id (echoed in every reply line).
    pub id: u64,
    /// The op id: the client's, or one bangerd generated.
    pub op_id: String,
    /// Whether the client chose the op id.
    pub client_op_id: bool,
    /// The method name (not yet looked up).
    pub method: String,
    /// The raw params.
    pub params: Value,
}

/// Decode and check one request line exactly as the server does before routing it
/// (JSON object, protocol version, envelope fields, op id shape). For tools and the
/// fuzz target; the server itself never panics on any line.
pub fn parse_request(line: &str) -> Result<ParsedRequest, RpcError> {
    parse(line)
        .map(|c| ParsedRequest {
            id: c.id,
            op_id: c.op_id,
            client_op_id: c.client_op_id,
            method: c.method,
            params: c.params,
        })
        .map_err(|(_, e)| e)
}

/// A request that passed envelope checks.
struct Call {
    id: u64,
    op_id: String,
    /// Whether the client chose the op id (else bangerd generated it).
    client_op_id: bool,
    method: String,
    params: Value,
}

/// Check the envelope. Errors carry the request's id when it could be read
/// (0 otherwise) and always an op id, so even a rejected request can be found
/// in the log.
fn parse(line: &str) -> Result<Call, (u64, RpcError)> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        let err = RpcError::bad_request(format!(
            "request is not valid JSON ({e}); send one JSON object per line"
        ));
        (0, reject(err, None))
    })?;
    if !value.is_object() {
        let err = RpcError::bad_request(format!(
            "request is {}, not a JSON object; send one object per line: {{\"v\":{PROTOCOL_VERSION},\"id\":1,\"method\":\"ping\"}}",
            json_kind(&value)
        ));
        return Err((0, reject(err, None)));
    }
    let id = value.get("id").and_then(Value::as_u64).unwrap_or(0);
    let client_op_id = value
        .get("op_id")
        .and_then(Value::as_str)
        .filter(|s| valid_op_id(s))
        .map(str::to_string);
    match value.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        other => {
            let got = other.map_or_else(|| "no version".to_string(), |v| format!("version {v}"));
            let err = RpcError::new(
                ErrorCode::BadVersion,
                format!(
                    "request speaks {got}, this bangerd speaks version {PROTOCOL_VERSION}; use a banger CLI matching the daemon (restart bangerd after upgrading)"
                ),
            );
            return Err((id, reject(err, client_op_id)));
        }
    }
    let req: Request = serde_json::from_value(value).map_err(|e| {
        let err = RpcError::bad_request(format!("malformed request envelope: {e}"));
        (id, reject(err, client_op_id.clone()))
    })?;
    let client_op_id = req.op_id.is_some();
    let op_id = match req.op_id {
        None => new_op_id(),
        Some(o) if valid_op_id(&o) => o,
        Some(_) => {
            let err = RpcError::bad_request(
                "op_id must be 1 to 64 characters from A-Z a-z 0-9 . _ -; or leave it out and bangerd picks one",
            );
            return Err((id, reject(err, None)));
        }
    };
    Ok(Call {
        id,
        op_id,
        client_op_id,
        method: req.method,
        params: req.params,
    })
}

/// Tag a rejected request with an op id and log it under that id.
fn reject(err: RpcError, op_id: Option<String>) -> RpcError {
    let op_id = op_id.unwrap_or_else(new_op_id);
    warn!(op_id = %op_id, code = %err.code, "rejected RPC request: {}", err.message);
    err.with_op_id(op_id)
}

impl Connection {
    async fn handle_line(
        &self,
        conn: &mut Conn,
        peer_uid: u32,
        line: &str,
    ) -> Result<Option<UpgradeFn>, LinesCodecError> {
        let wt = self.opts.write_timeout;
        let mut call = match parse(line) {
            Ok(call) => call,
            Err((id, err)) => return send_error(conn, wt, id, &err).await.map(|()| None),
        };
        let Some(handler) = self.router.get(&call.method) else {
            let err = reject(unknown_method(&call.method), Some(call.op_id));
            return send_error(conn, wt, call.id, &err).await.map(|()| None);
        };
        let claim = match self.claim(&mut call) {
            Ok(claim) => claim,
            Err(err) => return send_error(conn, wt, call.id, &err).await.map(|()| None),
        };
        let upgrade = UpgradeSlot::default();

        let span = tracing::info_span!("rpc", op_id = %call.op_id, method = %call.method);
        let (progress, mut rx) = ProgressSink::channel();
        let ctx = CallCtx {
            op_id: call.op_id.clone(),
            peer_uid,
            progress,
            upgrade: upgrade.clone(),
        };
        let started = Instant::now();
        // Raw handlers may do work before returning their future; keep it in the span too.
        let fut = span.in_scope(|| handler(ctx, call.params));
        let mut task = tokio::spawn(
            async move {
                // Held until the handler is done, whatever happens to the connection.
                let _claim = claim;
                debug!(peer_uid, "call started");
                let result = fut.await;
                let elapsed_ms = started.elapsed().as_millis();
                match &result {
                    Ok(_) => info!(elapsed_ms, "call succeeded"),
                    Err(e) => warn!(elapsed_ms, code = %e.code, "call failed: {}", e.message),
                }
                result
            }
            .instrument(span),
        );

        let joined = loop {
            tokio::select! {
                biased;
                Some(p) = rx.recv() => send_progress(conn, wt, call.id, &p).await?,
                joined = &mut task => break joined,
            }
        };
        // Taken whatever happens: an upgrade of a failed call is dropped here.
        let upgrade = upgrade.take();
        while let Ok(p) = rx.try_recv() {
            send_progress(conn, wt, call.id, &p).await?;
        }

        match joined {
            Ok(Ok(result)) => {
                let line = ResultLine {
                    v: PROTOCOL_VERSION,
                    id: call.id,
                    op_id: &call.op_id,
                    result: &result,
                };
                send_line(conn, wt, encode(call.id, &line)).await?;
                Ok(upgrade)
            }
            Ok(Err(mut err)) => {
                if err.op_id.is_none() {
                    err.op_id = Some(call.op_id);
                }
                send_error(conn, wt, call.id, &err).await.map(|()| None)
            }
            Err(join) => {
                error!(op_id = %call.op_id, method = %call.method, error = %join, "RPC handler panicked");
                let err = RpcError::operation_failed(format!(
                    "bangerd hit an internal error while running {} (a bug); the daemon log has details under {}",
                    call.method, call.op_id
                ))
                .with_op_id(call.op_id);
                send_error(conn, wt, call.id, &err).await.map(|()| None)
            }
        }
    }

    /// Hold the call's op id for as long as it runs. A client-chosen id already
    /// held by a running call is refused; a generated one is drawn again.
    fn claim(&self, call: &mut Call) -> Result<Claim, RpcError> {
        if call.client_op_id {
            return self.in_flight.claim(&call.op_id).ok_or_else(|| {
                reject(
                    RpcError::already_exists(format!(
                        "op_id {} is already used by a call in progress; give each call its own op_id, or leave it out and bangerd picks one",
                        call.op_id
                    )),
                    None,
                )
            });
        }
        loop {
            if let Some(claim) = self.in_flight.claim(&call.op_id) {
                return Ok(claim);
            }
            call.op_id = new_op_id();
        }
    }
}

/// Close after a final error line without destroying it. Closing a unix socket
/// with unread input makes the kernel reset the connection, and the peer then
/// sees ECONNRESET instead of our error line. So: stop writing, swallow what
/// the peer is still sending (bounded in time and bytes), then close.
async fn close_gracefully(conn: Conn) {
    const DRAIN_LIMIT: usize = 4 * MAX_REQUEST_LINE;
    let mut stream = conn.into_inner();
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < DRAIN_LIMIT {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Write one line within `timeout`: a client that does not read gets disconnected
/// instead of pinning the connection task (and the daemon's shutdown) forever.
async fn send_line(
    conn: &mut Conn,
    timeout: Duration,
    line: String,
) -> Result<(), LinesCodecError> {
    match tokio::time::timeout(timeout, conn.send(line)).await {
        Ok(r) => r,
        Err(_) => Err(LinesCodecError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client did not take a reply line within {} s",
                timeout.as_secs()
            ),
        ))),
    }
}

async fn send_progress(
    conn: &mut Conn,
    timeout: Duration,
    id: u64,
    p: &Progress,
) -> Result<(), LinesCodecError> {
    let line = ProgressLine {
        v: PROTOCOL_VERSION,
        id,
        progress: p,
    };
    send_line(conn, timeout, encode(id, &line)).await
}

async fn send_error(
    conn: &mut Conn,
    timeout: Duration,
    id: u64,
    err: &RpcError,
) -> Result<(), LinesCodecError> {
    let line = ErrorLine {
        v: PROTOCOL_VERSION,
        id,
        error: err,
    };
    send_line(conn, timeout, encode(id, &line)).await
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
