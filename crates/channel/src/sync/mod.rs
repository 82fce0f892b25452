//! The blocking (std threads) server side, for the guest agent.
//!
//! [`serve`] runs one connection on the calling thread: the handshake, then a loop that
//! reads frames and hands each new session to a [`Handler`], which answers it on its
//! own threads through [`Session`]. Frames are written whole under one lock, so any
//! number of worker threads can share the connection.

mod conn;
mod session;

pub use session::{Session, SessionReader, SessionWriter};

use crate::decoder::Decoder;
use crate::frame::{Frame, FrameError, Kind, Stream};
use crate::limits::{Limits, PREAMBLE};
use crate::msg::{Control, ErrorKind, ErrorReply, Goaway, Hello, Open, Role, VersionError};
use conn::{Conn, Entry};
use session::{lock, Inner};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// What a session's handler hears from the opener after the open.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A control message (a signal, a resize).
    Control(Control),
    /// The session ended: the opener closed it (`None`) or the connection is gone
    /// (`Some(reason)`). Whatever the session runs should stop.
    Closed(Option<String>),
}

/// Receives a session's inbound messages. Called on the connection's reader thread, so
/// it must only queue (never block, never call back into the session). Returning
/// `false` means "queue full": the opener flooded the session, which ends the connection.
pub type ControlSink = Box<dyn FnMut(Inbound) -> bool + Send>;

/// Answers sessions.
pub trait Handler: Send + Sync {
    /// A session was opened with `request`. Start the work (on another thread: this
    /// runs on the reader thread) and return where its inbound messages go.
    fn open(&self, request: Open, session: Session) -> ControlSink;
}

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This side's software string for the hello (`banger-agent 0.1.0`).
    pub software: String,
    /// Bounds on what the peer sends.
    pub limits: Limits,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading the byte stream failed.
    #[error("reading the channel failed: {0}")]
    Read(io::Error),
    /// Writing the byte stream failed.
    #[error("writing the channel failed: {0}")]
    Write(io::Error),
    /// The peer's bytes are not valid frames.
    #[error("the peer broke the framing: {0}")]
    Frame(#[from] FrameError),
    /// The peer's frames break the protocol's rules.
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    /// No protocol version in common.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The peer closed the connection and said why.
    #[error("the peer closed the connection: {0}")]
    Goaway(String),
}

impl ServeError {
    fn protocol(msg: impl Into<String>) -> Self {
        ServeError::Protocol(msg.into())
    }
}

/// How long to wait before reading again while no peer is connected.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Bytes read from the stream at a time.
const READ_BUF: usize = 64 << 10;

struct FrameReader<R> {
    r: R,
    dec: Decoder,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    fn new(r: R, limits: Limits) -> Self {
        Self {
            r,
            dec: Decoder::new(limits),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    /// The next frame; `None` at end of file. With `wait_for_peer`, end of file means
    /// "nobody connected yet" (a virtio-serial port without a host) and is waited out.
    fn next(&mut self, wait_for_peer: bool) -> Result<Option<Frame>, ServeError> {
        loop {
            if self.start < self.end {
                let (n, f) = self.dec.decode_step(&self.buf[self.start..self.end]);
                self.start += n;
                if let Some(f) = f? {
                    return Ok(Some(f));
                }
                continue;
            }
            match self.r.read(&mut self.buf) {
                Ok(0) if wait_for_peer => {
                    // A peer that left mid-preamble: start over with the next one.
                    self.dec.expect_preamble();
                    std::thread::sleep(IDLE_POLL);
                }
                Ok(0) => return Ok(None),
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ServeError::Read(e)),
            }
        }
    }
}

/// Serve one connection on `reader`/`writer` until the peer goes away (`Ok`) or breaks
/// the protocol (an error, after telling the peer why in a goaway frame). Every
/// session still open then ends and its handler is told.
pub fn serve<R: Read>(
    reader: R,
    writer: Box<dyn Write + Send>,
    config: &ServerConfig,
    handler: &dyn Handler,
) -> Result<(), ServeError> {
    let mut fr = FrameReader::new(reader, config.limits);
    serve_one(&mut fr, writer, config, handler, false)
}

/// Serve connection after connection on a byte stream that outlives them: a
/// virtio-serial port, where hosts come and go without the guest being told. End of
/// file means "no host right now"; a new host starts with the preamble, which is also
/// found where the previous connection's next frame was expected (a host that
/// reconnected before the guest read the end of the old one), so a framing error
/// starts a new connection from that point instead of ending the port. `writer` gives
/// a new writer for each connection; `on_end` hears how each one ended. Returns only
/// when the stream itself fails.
pub fn serve_port<R: Read>(
    reader: R,
    mut writer: impl FnMut() -> io::Result<Box<dyn Write + Send>>,
    config: &ServerConfig,
    handler: &dyn Handler,
    mut on_end: impl FnMut(&Result<(), ServeError>),
) -> ServeError {
    let mut fr = FrameReader::new(reader, config.limits);
    loop {
        let w = match writer() {
            Ok(w) => w,
            Err(e) => return ServeError::Write(e),
        };
        let r = serve_one(&mut fr, w, config, handler, true);
        on_end(&r);
        match r {
            Err(ServeError::Read(e)) => return ServeError::Read(e),
            Err(ServeError::Frame(_)) => fr.dec.resync(),
            _ => fr.dec.expect_preamble(),
        }
    }
}

fn serve_one<R: Read>(
    fr: &mut FrameReader<R>,
    writer: Box<dyn Write + Send>,
    config: &ServerConfig,
    handler: &dyn Handler,
    port: bool,
) -> Result<(), ServeError> {
    let conn = Arc::new(Conn::new(writer, config.limits));
    let result = run(fr, &conn, handler, &config.software, port);
    let reason = match &result {
        Ok(()) => "the host closed the channel".to_string(),
        Err(e) => {
            // On a port a framing error is most likely the next host: no goaway for it.
            let quiet = matches!(
                e,
                ServeError::Read(_) | ServeError::Write(_) | ServeError::Goaway(_)
            ) || (port && matches!(e, ServeError::Frame(_)));
            if !quiet {
                let msg = serde_json::to_vec(&Goaway {
                    message: e.to_string(),
                })
                .unwrap_or_default();
                let _ = conn.send(0, Kind::Goaway, &msg);
            }
            e.to_string()
        }
    };
    conn.teardown(&reason);
    result
}

fn run<R: Read>(
    fr: &mut FrameReader<R>,
    conn: &Arc<Conn>,
    handler: &dyn Handler,
    software: &str,
    port: bool,
) -> Result<(), ServeError> {
    let Some(first) = fr.next(port)? else {
        return Ok(());
    };
    if first.kind != Kind::Hello {
        return Err(ServeError::protocol(format!(
            "expected a hello, got a {} frame",
            crate::frame::kind_name(first.kind)
        )));
    }
    let peer: Hello = serde_json::from_slice(&first.payload)
        .map_err(|e| ServeError::protocol(format!("malformed hello: {e}")))?;
    let mut ours = Hello::new(Role::Server, software);
    ours.nonce = peer.nonce;
    let hello = serde_json::to_vec(&ours).map_err(|e| ServeError::protocol(e.to_string()))?;
    let header = crate::frame::Header {
        len: hello.len() as u32,
        session: 0,
        kind: Kind::Hello,
    }
    .encode();
    conn.write_raw(&[PREAMBLE, &header, &hello])
        .map_err(ServeError::Write)?;
    ours.negotiate(&peer)?;

    while let Some(f) = fr.next(false)? {
        dispatch(f, conn, handler)?;
    }
    Ok(())
}

fn dispatch(f: Frame, conn: &Arc<Conn>, handler: &dyn Handler) -> Result<(), ServeError> {
    let id = f.session;
    match f.kind {
        Kind::Hello => Err(ServeError::protocol("a second hello")),
        Kind::Goaway => {
            let g: Option<Goaway> = serde_json::from_slice(&f.payload).ok();
            Err(ServeError::Goaway(
                g.map(|g| g.message)
                    .unwrap_or_else(|| "no reason given".into()),
            ))
        }
        Kind::Open => open(id, &f.payload, conn, handler),
        Kind::Control => {
            let c: Control = serde_json::from_slice(&f.payload).map_err(|e| {
                ServeError::protocol(format!("malformed control message on session {id}: {e}"))
            })?;
            let mut t = lock(&conn.table);
            if let Some(Entry {
                sink: Some(sink), ..
            }) = t.map.get_mut(&id)
            {
                if !sink(Inbound::Control(c)) {
                    return Err(ServeError::protocol(format!(
                        "more than {} control messages pending on session {id}",
                        conn.limits.max_pending_controls
                    )));
                }
            }
            Ok(())
        }
        Kind::Close => {
            let e = lock(&conn.table).map.remove(&id);
            if let Some(mut e) = e {
                e.session.end("the host closed the session");
                if let Some(sink) = e.sink.as_mut() {
                    sink(Inbound::Closed(None));
                }
            }
            Ok(())
        }
        Kind::Data(s) | Kind::Eof(s) if s != Stream::In => Err(ServeError::protocol(format!(
            "the opener sent {} on the {s:?} stream of session {id}",
            crate::frame::kind_name(f.kind)
        ))),
        Kind::Window(Stream::In) => Err(ServeError::protocol(format!(
            "the opener granted credit on its own stream (session {id})"
        ))),
        Kind::Data(_) => with_session(conn, id, |st| {
            if st.ended.is_some() {
                return Ok(());
            }
            st.window
                .on_data(f.payload.len())
                .map_err(|e| ServeError::protocol(format!("session {id}: {e}")))?;
            if st.input_eof {
                return Err(ServeError::protocol(format!(
                    "data after end of stream on session {id}"
                )));
            }
            st.input.push_back(f.payload);
            Ok(())
        }),
        Kind::Eof(_) => with_session(conn, id, |st| {
            st.input_eof = true;
            Ok(())
        }),
        Kind::Window(s) => {
            let credit = f.credit().unwrap_or(0);
            with_session(conn, id, |st| {
                st.credit[s.index()]
                    .grant(credit)
                    .map_err(|e| ServeError::protocol(format!("session {id}: {e}")))
            })
        }
    }
}

/// Apply `f` to a live session's state and wake its threads; frames for sessions this
/// side already forgot are dropped (they crossed our close frame on the wire).
fn with_session(
    conn: &Conn,
    id: u32,
    f: impl FnOnce(&mut session::State) -> Result<(), ServeError>,
) -> Result<(), ServeError> {
    let s = lock(&conn.table).map.get(&id).map(|e| e.session.clone());
    let Some(s) = s else { return Ok(()) };
    let r = f(&mut lock(&s.state));
    s.changed.notify_all();
    r
}

fn open(
    id: u32,
    payload: &[u8],
    conn: &Arc<Conn>,
    handler: &dyn Handler,
) -> Result<(), ServeError> {
    {
        let mut t = lock(&conn.table);
        if id.is_multiple_of(2) || id <= t.last_opened {
            return Err(ServeError::protocol(format!(
                "session number {id} is not an odd number above {}",
                t.last_opened
            )));
        }
        t.last_opened = id;
        if t.map.len() >= conn.limits.max_sessions {
            drop(t);
            return refuse(
                conn,
                id,
                ErrorReply::new(
                    ErrorKind::Refused,
                    format!(
                        "too many sessions: {} are open on this connection; wait for some to finish",
                        conn.limits.max_sessions
                    ),
                ),
            );
        }
    }
    let request: Open = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                conn,
                id,
                ErrorReply::new(
                    ErrorKind::Invalid,
                    format!("the agent does not understand this request ({e}); it may be older than the host: rebuild the image"),
                ),
            )
        }
    };
    let inner = Arc::new(Inner::new(id));
    lock(&conn.table).map.insert(
        id,
        Entry {
            session: inner.clone(),
            sink: None,
        },
    );
    let session = Session {
        inner,
        conn: conn.clone(),
    };
    let sink = handler.open(request, session);
    if let Some(e) = lock(&conn.table).map.get_mut(&id) {
        e.sink = Some(sink);
    }
    Ok(())
}

/// Answer a session with an error and close it, keeping no state for it.
fn refuse(conn: &Conn, id: u32, e: ErrorReply) -> Result<(), ServeError> {
    let json = serde_json::to_vec(&Control::Error(e)).unwrap_or_default();
    conn.send(id, Kind::Control, &json)
        .and_then(|_| conn.send(id, Kind::Close, &[]))
        .map_err(ServeError::Write)
}
