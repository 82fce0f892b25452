//! One session of a blocking connection, as the agent's worker threads see it.

use super::conn::Conn;
use crate::flow::{RecvWindow, SendCredit};
use crate::frame::{Kind, Stream};
use crate::limits::DATA_CHUNK;
use crate::msg::Control;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Lock a mutex, ignoring poisoning: the state it guards stays consistent because no
/// code panics while holding it (and the guest build aborts on panic anyway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub(crate) struct State {
    /// Why the session can do no more I/O (closed by either side, or connection lost).
    pub(crate) ended: Option<String>,
    /// This side sent its close frame.
    pub(crate) closed_here: bool,
    /// Unread bytes of the inbound stream, front chunk partly read up to `offset`.
    pub(crate) input: VecDeque<Vec<u8>>,
    pub(crate) offset: usize,
    pub(crate) input_eof: bool,
    pub(crate) window: RecvWindow,
    /// Credit for the outbound streams, by [`Stream::index`].
    pub(crate) credit: [SendCredit; 3],
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) id: u32,
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Condvar,
}

impl Inner {
    pub(crate) fn new(id: u32) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                ended: None,
                closed_here: false,
                input: VecDeque::new(),
                offset: 0,
                input_eof: false,
                window: RecvWindow::default(),
                credit: Default::default(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Mark the session ended (idempotent: the first reason stays) and wake waiters.
    pub(crate) fn end(&self, reason: &str) {
        let mut st = lock(&self.state);
        if st.ended.is_none() {
            st.ended = Some(reason.to_string());
        }
        drop(st);
        self.changed.notify_all();
    }
}

/// A session accepted by [`super::serve`]: the handler reads the opener's stream, writes
/// its own, and sends control messages. Clones share the session, so separate threads
/// can pump stdout and stderr. Each stream must have one reader or writer at a time.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
    pub(crate) conn: Arc<Conn>,
}

fn ended_error(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_string())
}

impl Session {
    /// The session's number on the connection.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// Read the opener's stream (an exec's stdin, a put's tar): blocks until data, end
    /// of stream (`Ok(0)`), or the session ends (an error).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = lock(&self.inner.state);
        loop {
            if let Some(front) = st.input.front() {
                let from = st.offset;
                let n = (front.len() - from).min(buf.len());
                buf[..n].copy_from_slice(&front[from..from + n]);
                let whole = from + n == front.len();
                if whole {
                    st.input.pop_front();
                    st.offset = 0;
                } else {
                    st.offset += n;
                }
                let grant = st.window.on_consumed(n);
                let open = st.ended.is_none();
                drop(st);
                if let (Some(g), true) = (grant, open) {
                    // A lost grant only matters if the session lives on, and then the
                    // connection is gone too: nothing to do about a failure here.
                    let _ =
                        self.conn
                            .send(self.inner.id, Kind::Window(Stream::In), &g.to_be_bytes());
                }
                return Ok(n);
            }
            if st.input_eof {
                return Ok(0);
            }
            if let Some(r) = &st.ended {
                return Err(ended_error(r));
            }
            st = self
                .inner
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Send `data` on `stream` (`Out` or `Err`), waiting for credit as needed.
    pub fn write_all(&self, stream: Stream, data: &[u8]) -> io::Result<()> {
        if stream.sent_by_opener() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the accepting side cannot write the opener's stream",
            ));
        }
        let mut rest = data;
        while !rest.is_empty() {
            let n = {
                let mut st = lock(&self.inner.state);
                loop {
                    if let Some(r) = &st.ended {
                        return Err(ended_error(r));
                    }
                    let n = st.credit[stream.index()].take(rest.len().min(DATA_CHUNK));
                    if n > 0 {
                        break n;
                    }
                    st = self
                        .inner
                        .changed
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            self.conn
                .send(self.inner.id, Kind::Data(stream), &rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// No more data on `stream`.
    pub fn eof(&self, stream: Stream) -> io::Result<()> {
        self.check_open()?;
        self.conn.send(self.inner.id, Kind::Eof(stream), &[])
    }

    /// Send a control message.
    pub fn send(&self, control: &Control) -> io::Result<()> {
        self.check_open()?;
        let json = serde_json::to_vec(control)?;
        self.conn.send(self.inner.id, Kind::Control, &json)
    }

    /// End the session: tell the peer (unless it closed first) and forget it. Idempotent.
    pub fn close(&self) {
        {
            let mut st = lock(&self.inner.state);
            if st.closed_here {
                return;
            }
            st.closed_here = true;
            if st.ended.is_none() {
                st.ended = Some("the session was closed".into());
            }
        }
        self.inner.changed.notify_all();
        if self.conn.forget(self.inner.id) {
            let _ = self.conn.send(self.inner.id, Kind::Close, &[]);
        }
    }

    /// Whether the session ended (closed by either side, or the connection is gone).
    pub fn is_ended(&self) -> bool {
        lock(&self.inner.state).ended.is_some()
    }

    fn check_open(&self) -> io::Result<()> {
        match &lock(&self.inner.state).ended {
            Some(r) => Err(ended_error(r)),
            None => Ok(()),
        }
    }

    /// The opener's stream as a [`io::Read`].
    pub fn reader(&self) -> SessionReader {
        SessionReader(self.clone())
    }

    /// `stream` as a [`io::Write`] (each write waits for credit; flushing is a no-op).
    pub fn writer(&self, stream: Stream) -> SessionWriter {
        SessionWriter {
            session: self.clone(),
            stream,
        }
    }
}

/// [`Session::read`] as [`io::Read`].
#[derive(Debug)]
pub struct SessionReader(Session);

impl io::Read for SessionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// [`Session::write_all`] as [`io::Write`].
#[derive(Debug)]
pub struct SessionWriter {
    session: Session,
    stream: Stream,
}

impl io::Write for SessionWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.write_all(self.stream, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
