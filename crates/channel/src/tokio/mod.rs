//! The async (tokio) side, for the host: one [`Connection`] per byte stream, any number
//! of [`Session`]s over it.
//!
//! A reader task decodes frames and files them into the sessions' queues (never
//! waiting on the application: flow control bounds every queue); a writer task sends
//! frames whole, in the order they were queued. A protocol violation by the peer ends
//! the connection with a goaway frame saying why, and every session then fails with
//! that reason.

mod pump;
mod session;
mod splice;

pub use session::{Session, SessionError, StreamReader, StreamWriter};
pub use splice::{splice, Spliced};

use crate::decoder::Decoder;
use crate::frame::{self, Frame, FrameError, Kind};
use crate::limits::{Limits, PREAMBLE};
use crate::msg::{Control, ErrorKind, ErrorReply, Goaway, Hello, Open, Role, VersionError};
use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::sync::{mpsc, watch};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Bytes read from the stream at a time.
const READ_BUF: usize = 64 << 10;

/// How a connection is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// This side's role: the client writes its hello first and opens odd sessions.
    pub role: Role,
    /// This side's software string for the hello (`bangerd 0.1.0`).
    pub software: String,
    /// Bounds on what the peer sends.
    pub limits: Limits,
    /// Whether the peer may open sessions (see [`Connection::accept`]). When not, a
    /// peer's open frame is a protocol violation, so a hostile peer cannot make this
    /// side hold sessions it never asked for.
    pub accept: bool,
}

impl Config {
    /// A client that only opens sessions (the host towards a guest agent).
    pub fn client(software: impl Into<String>) -> Self {
        Self {
            role: Role::Client,
            software: software.into(),
            limits: Limits::default(),
            accept: false,
        }
    }

    /// A server that accepts no sessions: its sessions are attached by agreement
    /// ([`Connection::attach`]), as on the CLI's upgraded RPC connection.
    pub fn server(software: impl Into<String>) -> Self {
        Self {
            role: Role::Server,
            ..Self::client(software)
        }
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing the stream failed.
    #[error("channel I/O failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended before the peer's hello.
    #[error("the peer closed the channel before saying hello")]
    Eof,
    /// The peer's bytes are not frames (or it speaks the old JSON-lines protocol).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer's first frame was not a valid hello.
    #[error("the peer broke the protocol during the handshake: {0}")]
    Protocol(String),
    /// No protocol version in common.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The peer refused the connection and said why.
    #[error("the peer refused the connection: {0}")]
    Goaway(String),
}

/// Why the reader stopped.
enum Stop {
    /// Tell the peer why (a protocol violation by the peer).
    Violation(String),
    /// The peer went away or said goaway: nothing to tell.
    Quiet(String),
}

struct ConnState {
    sessions: HashMap<u32, Arc<session::Shared>>,
    next_id: u32,
    last_peer_id: u32,
    closed: Option<String>,
    accepted: VecDeque<(Open, Arc<session::Shared>)>,
    accept_waker: Option<Waker>,
}

pub(crate) struct Shared {
    role: Role,
    accept: bool,
    limits: Limits,
    peer: Hello,
    version: u32,
    out: mpsc::UnboundedSender<Vec<u8>>,
    state: Mutex<ConnState>,
    closed_tx: watch::Sender<Option<String>>,
}

fn lock(m: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// End the connection (idempotent): every session fails with `reason`.
    fn shutdown(&self, reason: String, goaway: bool) {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(reason.clone());
        let sessions: Vec<_> = st.sessions.drain().map(|(_, s)| s).collect();
        st.accepted.clear();
        let waker = st.accept_waker.take();
        drop(st);
        if goaway {
            let g = serde_json::to_vec(&Goaway {
                message: reason.clone(),
            })
            .unwrap_or_default();
            let _ = self.out.send(frame::encode(0, Kind::Goaway, &g));
        }
        for s in sessions {
            s.on_end(Some(&reason));
        }
        waker.into_iter().for_each(Waker::wake);
        self.closed_tx.send_replace(Some(reason));
    }

    pub(crate) fn forget(&self, id: u32) {
        lock(&self.state).sessions.remove(&id);
    }

    fn session(&self, id: u32) -> Option<Arc<session::Shared>> {
        lock(&self.state).sessions.get(&id).cloned()
    }

    fn dispatch(&self, f: Frame) -> Result<(), Stop> {
        let id = f.session;
        let v = Stop::Violation;
        match f.kind {
            Kind::Hello => Err(v("a second hello".into())),
            Kind::Goaway => {
                let g: Option<Goaway> = serde_json::from_slice(&f.payload).ok();
                Err(Stop::Quiet(format!(
                    "the peer closed the connection: {}",
                    g.map(|g| g.message)
                        .unwrap_or_else(|| "no reason given".into())
                )))
            }
            Kind::Open => self.on_open(id, &f.payload),
            Kind::Control => {
                let c: Control = serde_json::from_slice(&f.payload)
                    .map_err(|e| v(format!("malformed control message on session {id}: {e}")))?;
                match self.session(id) {
                    Some(s) => s.on_control(c, self.limits.max_pending_controls).map_err(v),
                    None => Ok(()),
                }
            }
            Kind::Close => {
                let s = lock(&self.state).sessions.remove(&id);
                if let Some(s) = s {
                    s.on_end(None);
                }
                Ok(())
            }
            Kind::Data(stream) => match self.session(id) {
                Some(s) => s.on_data(stream, f.payload).map_err(v),
                None => Ok(()),
            },
            Kind::Eof(stream) => match self.session(id) {
                Some(s) => s.on_eof(stream).map_err(v),
                None => Ok(()),
            },
            Kind::Window(stream) => match self.session(id) {
                Some(s) => s.on_window(stream, f.credit().unwrap_or(0)).map_err(v),
                None => Ok(()),
            },
        }
    }

    fn on_open(&self, id: u32, payload: &[u8]) -> Result<(), Stop> {
        if !self.accept {
            return Err(Stop::Violation(format!(
                "the peer opened session {id}, but this side accepts none"
            )));
        }
        let peer_parity = if self.peer.role == Role::Client { 1 } else { 0 };
        let mut st = lock(&self.state);
        if id % 2 != peer_parity || id <= st.last_peer_id {
            return Err(Stop::Violation(format!(
                "the peer opened session {id}, which is not a new number of its own"
            )));
        }
        st.last_peer_id = id;
        let refuse = |e: ErrorReply| {
            let json = serde_json::to_vec(&Control::Error(e)).unwrap_or_default();
            let _ = self.out.send(frame::encode(id, Kind::Control, &json));
            let _ = self.out.send(frame::encode(id, Kind::Close, &[]));
            Ok(())
        };
        if st.sessions.len() >= self.limits.max_sessions {
            return refuse(ErrorReply::new(
                ErrorKind::Refused,
                format!(
                    "too many sessions: {} are open on this connection",
                    self.limits.max_sessions
                ),
            ));
        }
        let request: Open = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                return refuse(ErrorReply::new(
                    ErrorKind::Invalid,
                    format!("request not understood: {e}"),
                ))
            }
        };
        let s = Arc::new(session::Shared::new(
            id,
            false,
            self.out.clone(),
            self.limits.max_json,
        ));
        st.sessions.insert(id, s.clone());
        st.accepted.push_back((request, s));
        let w = st.accept_waker.take();
        drop(st);
        w.into_iter().for_each(Waker::wake);
        Ok(())
    }
}

/// Closes the connection when the last [`Connection`] and [`Session`] handle is gone.
pub(crate) struct Guard {
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared
            .shutdown("the connection was closed by this side".into(), true);
    }
}

/// One connection. Clones share it; it closes when the last clone and the last of its
/// sessions are dropped, when [`Connection::close`] is called, or when the peer leaves.
#[derive(Clone)]
pub struct Connection {
    guard: Arc<Guard>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.guard.shared.peer.software)
            .field("closed", &self.closed_reason())
            .finish()
    }
}

async fn write_hello<W: AsyncWrite + Unpin>(w: &mut W, hello: &Hello) -> std::io::Result<()> {
    let json = serde_json::to_vec(hello).map_err(std::io::Error::other)?;
    let mut bytes = PREAMBLE.to_vec();
    bytes.extend(frame::encode(0, Kind::Hello, &json));
    w.write_all(&bytes).await?;
    w.flush().await
}

/// The hello in the peer's first frame (a goaway there is a refusal).
fn hello_of(f: &Frame) -> Result<Hello, HandshakeError> {
    match f.kind {
        Kind::Hello => serde_json::from_slice(&f.payload)
            .map_err(|e| HandshakeError::Protocol(format!("malformed hello: {e}"))),
        Kind::Goaway => {
            let g: Option<Goaway> = serde_json::from_slice(&f.payload).ok();
            Err(HandshakeError::Goaway(
                g.map(|g| g.message).unwrap_or_default(),
            ))
        }
        k => Err(HandshakeError::Protocol(format!(
            "expected a hello, got a {} frame",
            frame::kind_name(k)
        ))),
    }
}

impl Connection {
    /// Run the handshake on `io` and start the connection's tasks (on the current
    /// tokio runtime). Bound it with a timeout: a silent peer makes it wait forever.
    pub async fn handshake<S>(io: S, config: Config) -> Result<Self, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut r, mut w) = ::tokio::io::split(io);
        let mut ours = Hello::new(config.role, config.software.clone());
        if config.role == Role::Client {
            ours.nonce = Some(Hello::fresh_nonce());
            write_hello(&mut w, &ours).await?;
        }
        let mut dec = Decoder::new(config.limits);
        let mut buf = vec![0u8; READ_BUF];
        let (peer, leftover) = 'read: loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Err(HandshakeError::Eof);
            }
            let mut off = 0;
            while off < n {
                let (k, f) = dec.decode(&buf[off..n])?;
                off += k;
                let Some(f) = f else { continue };
                let peer = hello_of(&f)?;
                // A hello without our nonce answers an earlier connection (a guest
                // flushing stale replies into a virtio-serial port): skip it and
                // whatever follows it, up to the next preamble.
                if config.role == Role::Client && peer.nonce != ours.nonce {
                    dec.expect_preamble();
                    continue;
                }
                break 'read (peer, buf[off..n].to_vec());
            }
        };
        if config.role == Role::Server {
            ours.nonce = peer.nonce;
            write_hello(&mut w, &ours).await?;
        }
        let version = ours.negotiate(&peer)?;
        let (out, rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            role: config.role,
            accept: config.accept,
            limits: config.limits,
            peer,
            version,
            out,
            state: Mutex::new(ConnState {
                sessions: HashMap::new(),
                next_id: if config.role == Role::Client { 1 } else { 2 },
                last_peer_id: 0,
                closed: None,
                accepted: VecDeque::new(),
                accept_waker: None,
            }),
            closed_tx,
        });
        ::tokio::spawn(pump::reader(
            r,
            dec,
            leftover,
            shared.clone(),
            closed_rx.clone(),
        ));
        ::tokio::spawn(pump::writer(w, rx, shared.clone(), closed_rx));
        Ok(Self {
            guard: Arc::new(Guard { shared }),
        })
    }

    /// The peer's hello.
    pub fn peer(&self) -> &Hello {
        &self.guard.shared.peer
    }

    /// The protocol version in use.
    pub fn version(&self) -> u32 {
        self.guard.shared.version
    }

    /// Why the connection ended, if it did.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.guard.shared.state).closed.clone()
    }

    /// Whether the connection ended.
    pub fn is_closed(&self) -> bool {
        self.closed_reason().is_some()
    }

    /// Wait until the connection ends; returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.guard.shared.closed_tx.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "the connection was dropped".into();
            }
        }
    }

    /// End the connection now, telling the peer `reason`.
    pub fn close(&self, reason: &str) {
        self.guard.shared.shutdown(reason.to_string(), true);
    }

    /// Open a session for `request`.
    pub fn open(&self, request: &Open) -> Result<Session, SessionError> {
        let shared = &self.guard.shared;
        let json = serde_json::to_vec(request).unwrap_or_default();
        if json.len() > shared.limits.max_json as usize {
            return Err(SessionError::TooLarge(json.len(), shared.limits.max_json));
        }
        let mut st = lock(&shared.state);
        if let Some(r) = &st.closed {
            return Err(SessionError::Lost(r.clone()));
        }
        if st.sessions.len() >= shared.limits.max_sessions {
            return Err(SessionError::TooMany(shared.limits.max_sessions));
        }
        let id = st.next_id;
        st.next_id = id.checked_add(2).ok_or(SessionError::Exhausted)?;
        let s = Arc::new(session::Shared::new(
            id,
            true,
            shared.out.clone(),
            shared.limits.max_json,
        ));
        st.sessions.insert(id, s.clone());
        drop(st);
        shared
            .out
            .send(frame::encode(id, Kind::Open, &json))
            .map_err(|_| SessionError::Lost("the connection's writer stopped".into()))?;
        Ok(Session::new(s, self.guard.clone()))
    }

    /// A session both sides agreed on outside the channel, without an open frame: the
    /// daemon answers `vm.exec` over RPC with "session 1 is yours", then both ends of
    /// that connection attach session 1. Numbers keep their owners: an odd session
    /// belongs to the client (which then sends its `in` stream), an even one to the
    /// server; attaching a number spends it, so neither side opens it again.
    pub fn attach(&self, id: u32) -> Result<Session, SessionError> {
        let shared = &self.guard.shared;
        let mut st = lock(&shared.state);
        if let Some(r) = &st.closed {
            return Err(SessionError::Lost(r.clone()));
        }
        if id == 0 {
            return Err(SessionError::Attach(
                id,
                "session 0 is the connection itself",
            ));
        }
        if st.sessions.contains_key(&id) {
            return Err(SessionError::Attach(id, "it is open already"));
        }
        if st.sessions.len() >= shared.limits.max_sessions {
            return Err(SessionError::TooMany(shared.limits.max_sessions));
        }
        let clients = id % 2 == 1;
        let opened_here = clients == (shared.role == Role::Client);
        if opened_here {
            if id < st.next_id {
                return Err(SessionError::Attach(
                    id,
                    "this side already used that number",
                ));
            }
            st.next_id = id.checked_add(2).ok_or(SessionError::Exhausted)?;
        } else {
            if id <= st.last_peer_id {
                return Err(SessionError::Attach(
                    id,
                    "the peer already used that number",
                ));
            }
            st.last_peer_id = id;
        }
        let s = Arc::new(session::Shared::new(
            id,
            opened_here,
            shared.out.clone(),
            shared.limits.max_json,
        ));
        st.sessions.insert(id, s.clone());
        drop(st);
        Ok(Session::new(s, self.guard.clone()))
    }

    /// The next session the peer opened (only with [`Config::accept`]); `None` once the
    /// connection ended.
    pub async fn accept(&self) -> Option<(Open, Session)> {
        let shared = &self.guard.shared;
        let (req, s) = poll_fn(|cx| {
            let mut st = lock(&shared.state);
            if let Some(x) = st.accepted.pop_front() {
                return Poll::Ready(Some(x));
            }
            if st.closed.is_some() {
                return Poll::Ready(None);
            }
            st.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Some((req, Session::new(s, self.guard.clone())))
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.guard.shared.role
    }
}
