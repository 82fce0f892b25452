//! One session of an async connection: per-stream inbound queues with their windows,
//! per-stream send credit, and the control-message queue, each with the waker of the
//! task waiting on it.

use super::Guard;
use crate::flow::{FlowError, RecvWindow, SendCredit};
use crate::frame::{self, Kind, Stream};
use crate::limits::DATA_CHUNK;
use crate::msg::Control;
use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::sync::mpsc::UnboundedSender;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// This side closed the session.
    #[error("the session was closed")]
    Closed,
    /// The peer closed the session; nothing more can be sent on it.
    #[error("the peer closed the session")]
    PeerClosed,
    /// The connection the session ran on is gone.
    #[error("the channel connection was lost: {0}")]
    Lost(String),
    /// The stream flows the other way on this session.
    #[error("the {0:?} stream cannot be {1} by this side of the session")]
    WrongStream(Stream, &'static str),
    /// End of stream was already sent.
    #[error("end of stream was already sent on {0:?}")]
    AfterEof(Stream),
    /// The connection has as many sessions as it allows.
    #[error("too many sessions: {0} are open on this connection; wait for some to finish")]
    TooMany(usize),
    /// Session numbers are spent (after 2^31 sessions).
    #[error("the connection ran out of session numbers; reconnect")]
    Exhausted,
    /// A control message over the JSON limit.
    #[error("a control message of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, u32),
    /// [`super::Connection::attach`] named a session that cannot be attached (0, in
    /// use, or a number already spent).
    #[error("session {0} cannot be attached: {1}")]
    Attach(u32, &'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Open,
    ClosedHere,
    PeerClosed,
    Lost(String),
}

#[derive(Debug, Default)]
struct InStream {
    queue: VecDeque<Vec<u8>>,
    eof: bool,
    window: RecvWindow,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct State {
    inbound: [InStream; 3],
    controls: VecDeque<Control>,
    control_waker: Option<Waker>,
    credit: [SendCredit; 3],
    credit_waker: [Option<Waker>; 3],
    eof_sent: [bool; 3],
    end: End,
}

/// What the connection's reader task and the session handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u32,
    opened_here: bool,
    out: UnboundedSender<Vec<u8>>,
    max_json: u32,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A protocol violation seen on a session (ends the connection).
pub(crate) type Violation = String;

impl Shared {
    pub(crate) fn new(
        id: u32,
        opened_here: bool,
        out: UnboundedSender<Vec<u8>>,
        max_json: u32,
    ) -> Self {
        Self {
            id,
            opened_here,
            out,
            max_json,
            state: Mutex::new(State {
                inbound: Default::default(),
                controls: VecDeque::new(),
                control_waker: None,
                credit: Default::default(),
                credit_waker: Default::default(),
                eof_sent: [false; 3],
                end: End::Open,
            }),
        }
    }

    /// Whether this side receives `stream` on this session.
    fn receives(&self, stream: Stream) -> bool {
        stream.sent_by_opener() != self.opened_here
    }

    fn all_wakers(st: &mut State) -> Vec<Waker> {
        let mut w: Vec<Waker> = st
            .inbound
            .iter_mut()
            .filter_map(|s| s.waker.take())
            .collect();
        w.extend(st.control_waker.take());
        w.extend(st.credit_waker.iter_mut().filter_map(Option::take));
        w
    }

    pub(crate) fn on_data(&self, stream: Stream, data: Vec<u8>) -> Result<(), Violation> {
        if !self.receives(stream) {
            return Err(format!(
                "data on the {stream:?} stream of session {}, which flows the other way",
                self.id
            ));
        }
        let mut st = lock(&self.state);
        if st.end != End::Open {
            return Ok(());
        }
        let s = &mut st.inbound[stream.index()];
        if s.eof {
            return Err(format!("data after end of stream on session {}", self.id));
        }
        s.window
            .on_data(data.len())
            .map_err(|e: FlowError| format!("session {}: {e}", self.id))?;
        s.queue.push_back(data);
        let w = s.waker.take();
        drop(st);
        w.into_iter().for_each(Waker::wake);
        Ok(())
    }

    pub(crate) fn on_eof(&self, stream: Stream) -> Result<(), Violation> {
        if !self.receives(stream) {
            return Err(format!(
                "end of the {stream:?} stream of session {}, which flows the other way",
                self.id
            ));
        }
        let mut st = lock(&self.state);
        let s = &mut st.inbound[stream.index()];
        s.eof = true;
        let w = s.waker.take();
        drop(st);
        w.into_iter().for_each(Waker::wake);
        Ok(())
    }

    pub(crate) fn on_window(&self, stream: Stream, credit: u32) -> Result<(), Violation> {
        if self.receives(stream) {
            return Err(format!(
                "credit granted on the {stream:?} stream of session {}, which the peer sends",
                self.id
            ));
        }
        let mut st = lock(&self.state);
        st.credit[stream.index()]
            .grant(credit)
            .map_err(|e| format!("session {}: {e}", self.id))?;
        let w = st.credit_waker[stream.index()].take();
        drop(st);
        w.into_iter().for_each(Waker::wake);
        Ok(())
    }

    pub(crate) fn on_control(&self, c: Control, max_pending: usize) -> Result<(), Violation> {
        let mut st = lock(&self.state);
        if st.end != End::Open {
            return Ok(());
        }
        if st.controls.len() >= max_pending {
            return Err(format!(
                "more than {max_pending} control messages pending on session {}",
                self.id
            ));
        }
        st.controls.push_back(c);
        let w = st.control_waker.take();
        drop(st);
        w.into_iter().for_each(Waker::wake);
        Ok(())
    }

    /// The peer closed the session, or the connection is gone (`Some(reason)`).
    pub(crate) fn on_end(&self, lost: Option<&str>) {
        let mut st = lock(&self.state);
        if st.end == End::Open {
            st.end = match lost {
                Some(r) => End::Lost(r.to_string()),
                None => End::PeerClosed,
            };
        }
        let w = Self::all_wakers(&mut st);
        drop(st);
        w.into_iter().for_each(Waker::wake);
    }

    fn end_error(end: &End) -> SessionError {
        match end {
            End::Open | End::ClosedHere => SessionError::Closed,
            End::PeerClosed => SessionError::PeerClosed,
            End::Lost(r) => SessionError::Lost(r.clone()),
        }
    }

    fn poll_read(
        &self,
        cx: &mut Context<'_>,
        stream: Stream,
        max: usize,
    ) -> Poll<Result<Option<Vec<u8>>, SessionError>> {
        if !self.receives(stream) {
            return Poll::Ready(Err(SessionError::WrongStream(stream, "read")));
        }
        let mut st = lock(&self.state);
        let open = st.end == End::Open;
        let s = &mut st.inbound[stream.index()];
        if let Some(front) = s.queue.front_mut() {
            let n = max.max(1).min(front.len());
            let data = if n == front.len() {
                s.queue.pop_front().unwrap_or_default()
            } else {
                let rest = front.split_off(n);
                std::mem::replace(front, rest)
            };
            let grant = s.window.on_consumed(data.len());
            drop(st);
            if let (Some(g), true) = (grant, open) {
                let _ = self.out.send(frame::window(self.id, stream, g));
            }
            return Poll::Ready(Ok(Some(data)));
        }
        if s.eof {
            return Poll::Ready(Ok(None));
        }
        match &st.end {
            End::Open => {
                st.inbound[stream.index()].waker = Some(cx.waker().clone());
                Poll::Pending
            }
            // A peer that closed without an end of stream sends nothing more either.
            End::PeerClosed => Poll::Ready(Ok(None)),
            e => Poll::Ready(Err(Self::end_error(e))),
        }
    }

    fn poll_control(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Control>, SessionError>> {
        let mut st = lock(&self.state);
        if let Some(c) = st.controls.pop_front() {
            return Poll::Ready(Ok(Some(c)));
        }
        match &st.end {
            End::Open => {
                st.control_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            End::PeerClosed => Poll::Ready(Ok(None)),
            e => Poll::Ready(Err(Self::end_error(e))),
        }
    }

    fn poll_write(
        &self,
        cx: &mut Context<'_>,
        stream: Stream,
        data: &[u8],
    ) -> Poll<Result<usize, SessionError>> {
        if self.receives(stream) {
            return Poll::Ready(Err(SessionError::WrongStream(stream, "written")));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = lock(&self.state);
        if st.end != End::Open {
            return Poll::Ready(Err(Self::end_error(&st.end)));
        }
        if st.eof_sent[stream.index()] {
            return Poll::Ready(Err(SessionError::AfterEof(stream)));
        }
        let n = st.credit[stream.index()].take(data.len().min(DATA_CHUNK));
        if n == 0 {
            st.credit_waker[stream.index()] = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(st);
        self.send(Kind::Data(stream), &data[..n])?;
        Poll::Ready(Ok(n))
    }

    fn send(&self, kind: Kind, payload: &[u8]) -> Result<(), SessionError> {
        self.out
            .send(frame::encode(self.id, kind, payload))
            .map_err(|_| SessionError::Lost("the connection's writer stopped".into()))
    }

    fn check_open(&self) -> Result<(), SessionError> {
        let st = lock(&self.state);
        match &st.end {
            End::Open => Ok(()),
            e => Err(Self::end_error(e)),
        }
    }

    /// Mark closed here; returns whether a close frame should go out.
    fn close_here(&self) -> bool {
        let mut st = lock(&self.state);
        let was_open = st.end == End::Open;
        if was_open {
            st.end = End::ClosedHere;
        }
        let w = Self::all_wakers(&mut st);
        drop(st);
        w.into_iter().for_each(Waker::wake);
        was_open
    }
}

struct Handle {
    s: Arc<Shared>,
    conn: Arc<Guard>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        close(&self.s, &self.conn);
    }
}

fn close(s: &Shared, conn: &Guard) {
    if s.close_here() {
        let _ = s.send(Kind::Close, &[]);
    }
    conn.shared.forget(s.id);
}

/// A session on a [`super::Connection`]. Clones share it; dropping the last clone closes
/// it. Each stream, and the control queue, must have one reader (or writer) at a time.
#[derive(Clone)]
pub struct Session {
    h: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.h.s.id).finish()
    }
}

impl Session {
    pub(crate) fn new(s: Arc<Shared>, conn: Arc<Guard>) -> Self {
        Self {
            h: Arc::new(Handle { s, conn }),
        }
    }

    /// The session's number on its connection.
    pub fn id(&self) -> u32 {
        self.h.s.id
    }

    /// Poll for the next bytes (at most `max`) of an inbound stream; `None` at its end.
    /// Taking bytes returns their credit to the peer.
    pub fn poll_read(
        &self,
        cx: &mut Context<'_>,
        stream: Stream,
        max: usize,
    ) -> Poll<Result<Option<Vec<u8>>, SessionError>> {
        self.h.s.poll_read(cx, stream, max)
    }

    /// The next chunk of an inbound stream; `None` at its end.
    pub async fn read(&self, stream: Stream) -> Result<Option<Vec<u8>>, SessionError> {
        poll_fn(|cx| self.poll_read(cx, stream, usize::MAX)).await
    }

    /// Poll for the next control message; `None` once the peer closed the session.
    pub fn poll_control(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Control>, SessionError>> {
        self.h.s.poll_control(cx)
    }

    /// The next control message; `None` once the peer closed the session.
    pub async fn control(&self) -> Result<Option<Control>, SessionError> {
        poll_fn(|cx| self.poll_control(cx)).await
    }

    /// Poll to send some of `data` on an outbound stream (as much as credit allows).
    pub fn poll_write(
        &self,
        cx: &mut Context<'_>,
        stream: Stream,
        data: &[u8],
    ) -> Poll<Result<usize, SessionError>> {
        self.h.s.poll_write(cx, stream, data)
    }

    /// Send all of `data` on an outbound stream, waiting for credit as needed.
    pub async fn write_all(&self, stream: Stream, mut data: &[u8]) -> Result<(), SessionError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, stream, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// No more data on an outbound stream (idempotent).
    pub fn eof(&self, stream: Stream) -> Result<(), SessionError> {
        let s = &self.h.s;
        if s.receives(stream) {
            return Err(SessionError::WrongStream(stream, "ended"));
        }
        s.check_open()?;
        let mut st = lock(&s.state);
        if std::mem::replace(&mut st.eof_sent[stream.index()], true) {
            return Ok(());
        }
        drop(st);
        s.send(Kind::Eof(stream), &[])
    }

    /// Send a control message.
    pub fn send(&self, control: &Control) -> Result<(), SessionError> {
        let s = &self.h.s;
        s.check_open()?;
        let json = serde_json::to_vec(control).unwrap_or_default();
        if json.len() > s.max_json as usize {
            return Err(SessionError::TooLarge(json.len(), s.max_json));
        }
        s.send(Kind::Control, &json)
    }

    /// Close the session now (for every clone): the peer stops its work.
    pub fn close(&self) {
        close(&self.h.s, &self.h.conn);
    }

    /// An inbound stream as [`AsyncRead`].
    pub fn reader(&self, stream: Stream) -> StreamReader {
        StreamReader {
            session: self.clone(),
            stream,
        }
    }

    /// An outbound stream as [`AsyncWrite`]; shutting it down sends end of stream.
    pub fn writer(&self, stream: Stream) -> StreamWriter {
        StreamWriter {
            session: self.clone(),
            stream,
        }
    }
}

fn io_error(e: SessionError) -> std::io::Error {
    let kind = match e {
        SessionError::Lost(_) => std::io::ErrorKind::ConnectionAborted,
        SessionError::Closed | SessionError::PeerClosed => std::io::ErrorKind::BrokenPipe,
        _ => std::io::ErrorKind::InvalidInput,
    };
    std::io::Error::new(kind, e)
}

/// An inbound stream of a [`Session`] as [`AsyncRead`].
#[derive(Debug)]
pub struct StreamReader {
    session: Session,
    stream: Stream,
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match self.session.poll_read(cx, self.stream, buf.remaining()) {
            Poll::Ready(Ok(Some(data))) => {
                buf.put_slice(&data);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An outbound stream of a [`Session`] as [`AsyncWrite`].
#[derive(Debug)]
pub struct StreamWriter {
    session: Session,
    stream: Stream,
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.session
            .poll_write(cx, self.stream, buf)
            .map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.session.eof(self.stream).map_err(io_error))
    }
}
