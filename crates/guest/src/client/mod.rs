//! The host's client of a guest agent: one multiplexed channel connection per VM,
//! reopened on demand when it drops, with typed requests on top.
//!
//! ```no_run
//! # async fn f() -> Result<(), banger_guest::client::ClientError> {
//! use banger_guest::client::{AgentClient, Endpoint};
//! let agent = AgentClient::new(Endpoint::Serial("/run/banger/vms/x/agent.sock".into()));
//! agent.wait_ready(std::time::Duration::from_secs(30)).await?;
//! let exec = agent.exec(banger_guest::client::argv(["uname", "-a"])).await?;
//! let status = exec.wait().await?;
//! # Ok(()) }
//! ```
//!
//! Everything the guest sends is bounded by the channel's limits (see
//! `banger_channel`): a hostile guest fails its own sessions, never the host's memory.

mod exec;
mod files;

pub use exec::{argv, shell, ExecSession};
pub use files::GetStream;

use banger_channel::tokio::{Config, Connection, HandshakeError, Session, SessionError};
use banger_channel::{Control, ErrorReply, FrameError, Open, Pong};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// Where a guest's agent is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket that carries the channel directly: QEMU's virtio-serial chardev
    /// (or an agent serving `--listen` in tests).
    Serial(PathBuf),
    /// Firecracker's vsock socket; the agent listens on [`crate::vsock::AGENT_PORT`].
    Vsock(PathBuf),
}

impl Endpoint {
    /// The endpoint of a VM whose VMM backend is `backend` with agent socket `socket`.
    pub fn for_backend(backend: &str, socket: impl Into<PathBuf>) -> Self {
        if backend == "firecracker" {
            Endpoint::Vsock(socket.into())
        } else {
            Endpoint::Serial(socket.into())
        }
    }

    fn path(&self) -> &PathBuf {
        match self {
            Endpoint::Serial(p) | Endpoint::Vsock(p) => p,
        }
    }
}

/// Why talking to a guest agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint's socket could not be connected.
    #[error(
        "cannot connect to the guest agent's socket {path}: {source}; check that the VM is running"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Firecracker's vsock handshake failed.
    #[error(transparent)]
    Vsock(#[from] crate::vsock::VsockError),
    /// Connected, but no channel handshake in time.
    #[error("the guest agent did not complete the channel handshake within {0:?}: the guest is still booting or its agent is stuck")]
    HandshakeTimeout(Duration),
    /// The handshake failed.
    #[error("the guest agent's channel handshake failed: {0}")]
    Handshake(HandshakeError),
    /// The guest's agent is older than this banger and speaks only ping/ports/shutdown.
    #[error("the guest's agent predates the exec channel (it speaks the old JSON-lines protocol): rebuild the image with this banger (banger image build) to run commands through the agent, or pass --via-ssh to use OpenSSH")]
    Legacy,
    /// The session or its connection failed.
    #[error("the guest agent's channel failed: {0}")]
    Session(#[from] SessionError),
    /// The agent refused or failed the request.
    #[error("{}", .0.message)]
    Refused(ErrorReply),
    /// No answer in time.
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    /// An answer that does not fit the request.
    #[error("the guest agent answered a {request} request with {answer}")]
    Unexpected {
        /// The request's type.
        request: &'static str,
        /// What came back (debug form).
        answer: String,
    },
    /// The agent closed the session without answering.
    #[error("the guest agent closed the session without answering")]
    NoAnswer,
    /// Reading or writing local data for a transfer failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One agent, one connection at a time, reopened when it drops.
#[derive(Debug)]
pub struct AgentClient {
    endpoint: Endpoint,
    connect_timeout: Duration,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

/// How long connecting and the handshake may take by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn software() -> String {
    format!("banger {}", env!("CARGO_PKG_VERSION"))
}

impl AgentClient {
    /// A client for `endpoint`; nothing is connected until the first request.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            connect_timeout: CONNECT_TIMEOUT,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Bound connecting and the handshake by `t` instead of [`CONNECT_TIMEOUT`].
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
        let hs = |e: HandshakeError| match e {
            HandshakeError::Frame(FrameError::LegacyPeer) => ClientError::Legacy,
            e => ClientError::Handshake(e),
        };
        let fut = async {
            match &self.endpoint {
                Endpoint::Serial(p) => {
                    let s =
                        UnixStream::connect(p)
                            .await
                            .map_err(|source| ClientError::Connect {
                                path: p.clone(),
                                source,
                            })?;
                    Connection::handshake(s, Config::client(software()))
                        .await
                        .map_err(hs)
                }
                Endpoint::Vsock(p) => {
                    let v =
                        crate::vsock::connect(p, crate::vsock::AGENT_PORT, self.connect_timeout)
                            .await?;
                    Connection::handshake(v.stream, Config::client(software()))
                        .await
                        .map_err(hs)
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| ClientError::HandshakeTimeout(self.connect_timeout))?
    }

    /// The live connection, connecting (again) if there is none.
    pub async fn connection(&self) -> Result<Connection, ClientError> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *g = None;
        let c = self.connect().await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Drop the current connection (its sessions fail); the next request reconnects.
    pub async fn disconnect(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close("the host disconnected");
        }
    }

    /// Open a raw session (reconnecting once if the connection was found dead).
    pub async fn open(&self, request: &Open) -> Result<Session, ClientError> {
        let c = self.connection().await?;
        match c.open(request) {
            Err(SessionError::Lost(_)) => Ok(self.connection().await?.open(request)?),
            r => Ok(r?),
        }
    }

    /// Open `request` and return its answer (the first message that is not `Started`).
    async fn ask(&self, request: &Open) -> Result<Control, ClientError> {
        let s = self.open(request).await?;
        loop {
            match s.control().await? {
                Some(Control::Started { .. }) => continue,
                Some(Control::Error(e)) => return Err(ClientError::Refused(e)),
                Some(c) => return Ok(c),
                None => return Err(ClientError::NoAnswer),
            }
        }
    }

    /// Is the agent up, and which boot is it.
    pub async fn ping(&self) -> Result<Pong, ClientError> {
        match self.ask(&Open::Ping).await? {
            Control::Pong(p) => Ok(p),
            c => Err(unexpected("ping", c)),
        }
    }

    /// Ping until the agent answers or `deadline` passes; each attempt is bounded.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<Pong, ClientError> {
        let start = Instant::now();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(ClientError::Timeout(deadline));
            }
            let attempt = left.min(Duration::from_secs(2));
            match tokio::time::timeout(attempt, self.ping()).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e @ ClientError::Legacy)) => return Err(e),
                _ => {
                    self.disconnect().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// TCP ports listening in the guest.
    pub async fn ports(&self) -> Result<Vec<u16>, ClientError> {
        match self.ask(&Open::Ports).await? {
            Control::Ports { ports } => Ok(ports),
            c => Err(unexpected("ports", c)),
        }
    }

    /// Flush the guest's filesystems and power it off; returns once the agent agreed
    /// (the caller watches the VMM exit).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        match self.ask(&Open::Shutdown).await? {
            Control::Done(_) => Ok(()),
            c => Err(unexpected("shutdown", c)),
        }
    }
}

impl AgentClient {
    /// A guest restored from a warm snapshot takes `identity` (hostname, address,
    /// MAC, machine-id, boot id, entropy, clock, host key); returns once applied.
    pub async fn identity(&self, identity: &banger_channel::Identity) -> Result<(), ClientError> {
        match self.ask(&Open::Identity(identity.clone())).await? {
            Control::Done(_) => Ok(()),
            c => Err(unexpected("identity", c)),
        }
    }
}

fn unexpected(request: &'static str, c: Control) -> ClientError {
    ClientError::Unexpected {
        request,
        answer: format!("{c:?}"),
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}
