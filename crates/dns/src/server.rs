//! The UDP and TCP loops, with every bound in one place ([`Limits`]).

use crate::answer::{respond, Reply};
use crate::Names;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Hard bounds of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Forwarded queries in flight at once; more are answered SERVFAIL at once.
    pub max_forwards: usize,
    /// TCP connections at once; more are closed on accept.
    pub max_tcp_connections: usize,
    /// How long one upstream gets to answer.
    pub upstream_timeout: Duration,
    /// How long a TCP client may stay silent, or take to read a reply.
    pub tcp_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_forwards: 256,
            max_tcp_connections: 64,
            upstream_timeout: Duration::from_secs(2),
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// The largest UDP datagram we read or relay (EDNS payloads above this are not
/// useful on a bridge and cost memory per query).
const MAX_UDP: usize = 4096;

/// One listener's behaviour: the names it serves, whether it forwards, and where to.
#[derive(Debug)]
pub struct Responder {
    names: Arc<Names>,
    upstreams: std::sync::RwLock<Vec<SocketAddr>>,
    forward: bool,
    limits: Limits,
    forwards: Arc<Semaphore>,
}

impl Responder {
    /// A responder over `names`. With `forward`, names outside `vm.` go to
    /// `upstreams` (SERVFAIL when there are none); without it they are refused.
    pub fn new(
        names: Arc<Names>,
        forward: bool,
        upstreams: Vec<SocketAddr>,
        limits: Limits,
    ) -> Self {
        Self {
            names,
            upstreams: std::sync::RwLock::new(upstreams),
            forward,
            forwards: Arc::new(Semaphore::new(limits.max_forwards)),
            limits,
        }
    }

    /// Forward to `upstreams` from now on (the host's resolvers change: a laptop
    /// moves between networks).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.write().unwrap_or_else(|p| p.into_inner()) = upstreams;
    }

    /// Where names outside `vm.` are forwarded.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ask the upstreams in turn; the first matching reply wins.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for up in &self.upstreams() {
            let got = if tcp {
                tokio::time::timeout(self.limits.upstream_timeout, forward_tcp(*up, query)).await
            } else {
                tokio::time::timeout(self.limits.upstream_timeout, forward_udp(*up, query)).await
            };
            match got {
                Ok(Ok(reply)) if reply.len() >= 12 && reply[..2] == query[..2] => {
                    return Some(reply)
                }
                Ok(Ok(_)) => {
                    tracing::debug!(upstream = %up, "upstream reply did not match the query")
                }
                Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
                Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
            }
        }
        None
    }

    /// Answer one query: locally, by forwarding, or not at all.
    async fn handle(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match respond(query, &self.names, self.forward) {
            Reply::Answer(b) => Some(b),
            Reply::Ignore => None,
            Reply::Forward => match self.forward(query, tcp).await {
                Some(b) => Some(b),
                None => servfail(query),
            },
        }
    }
}

/// SERVFAIL for `query`, keeping its id and question.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    let req = Message::from_vec(query).ok()?;
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.response_code = ResponseCode::ServFail;
    m.queries = req.queries;
    m.to_vec().ok()
}

async fn forward_udp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    // connect(): the kernel drops datagrams from anyone but the upstream.
    s.connect(up).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP];
    let n = s.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn forward_tcp(up: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    write_framed(&mut s, query).await?;
    read_framed(&mut s).await
}

/// A TCP DNS message: u16 length, then that many bytes (so at most 64 KiB: the
/// protocol's own bound).
async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed<W: AsyncWriteExt + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| std::io::Error::other("DNS message over 64 KiB"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await
}

/// Serve DNS over UDP on `sock` until `stop` is cancelled. Local answers are sent
/// inline; forwards run in tasks bounded by [`Limits::max_forwards`].
pub async fn serve_udp(sock: UdpSocket, r: Arc<Responder>, stop: CancellationToken) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let (n, from) = tokio::select! {
            () = stop.cancelled() => return,
            got = sock.recv_from(&mut buf) => match got {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS receive failed");
                    continue;
                }
            },
        };
        let query = buf[..n].to_vec();
        match respond(&query, &r.names, r.forward) {
            Reply::Ignore => {}
            Reply::Answer(b) => {
                let _ = sock.send_to(&b, from).await;
            }
            Reply::Forward => {
                let Ok(permit) = Arc::clone(&r.forwards).try_acquire_owned() else {
                    if let Some(b) = servfail(&query) {
                        let _ = sock.send_to(&b, from).await;
                    }
                    continue;
                };
                let (r, sock) = (Arc::clone(&r), Arc::clone(&sock));
                tokio::spawn(async move {
                    let _permit = permit;
                    let reply = match r.forward(&query, false).await {
                        Some(b) => Some(b),
                        None => servfail(&query),
                    };
                    if let Some(b) = reply {
                        let _ = sock.send_to(&b, from).await;
                    }
                });
            }
        }
    }
}

/// Serve DNS over TCP on `listener` until `stop` is cancelled, at most
/// [`Limits::max_tcp_connections`] at once, each closed after [`Limits::tcp_idle`]
/// of silence.
pub async fn serve_tcp(listener: TcpListener, r: Arc<Responder>, stop: CancellationToken) {
    let conns = Arc::new(Semaphore::new(r.limits.max_tcp_connections));
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            got = listener.accept() => match got {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let (r, stop) = (Arc::clone(&r), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = stop.cancelled() => {}
                () = tcp_connection(stream, &r) => {}
            }
        });
    }
}

async fn tcp_connection(mut s: TcpStream, r: &Responder) {
    let idle = r.limits.tcp_idle;
    loop {
        let Ok(Ok(query)) = tokio::time::timeout(idle, read_framed(&mut s)).await else {
            return;
        };
        let Some(reply) = r.handle(&query, true).await else {
            continue;
        };
        if !matches!(
            tokio::time::timeout(idle, write_framed(&mut s, &reply)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
