//! The shared half of a blocking connection: the writer every thread sends through and
//! the table of open sessions.

use super::session::{lock, Inner};
use super::{ControlSink, Inbound};
use crate::frame::{Header, Kind};
use crate::limits::Limits;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

pub(crate) struct Out {
    w: Box<dyn Write + Send>,
    closed: bool,
}

pub(crate) struct Entry {
    pub(crate) session: Arc<Inner>,
    pub(crate) sink: Option<ControlSink>,
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) map: HashMap<u32, Entry>,
    /// Highest session number the peer opened (numbers only grow: never reused).
    pub(crate) last_opened: u32,
}

/// Writer and session table of one connection.
pub(crate) struct Conn {
    out: Mutex<Out>,
    pub(crate) table: Mutex<Table>,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(w: Box<dyn Write + Send>, limits: Limits) -> Self {
        Self {
            out: Mutex::new(Out { w, closed: false }),
            table: Mutex::new(Table::default()),
            limits,
        }
    }

    /// Write one frame, whole, before any other thread's frame. After the connection
    /// ended this fails at once, so stale workers never write into a later connection
    /// on the same byte stream (a virtio-serial port outlives host connections).
    pub(crate) fn send(&self, session: u32, kind: Kind, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let header = Header { len, session, kind }.encode();
        self.write_raw(&[&header, payload])
    }

    pub(crate) fn write_raw(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut o = lock(&self.out);
        if o.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the channel connection is closed",
            ));
        }
        let mut r = Ok(());
        for p in parts {
            r = r.and_then(|_| o.w.write_all(p));
        }
        r = r.and_then(|_| o.w.flush());
        if r.is_err() {
            o.closed = true;
        }
        r
    }

    /// Remove a session from the table; `true` if it was there (the peer had not
    /// closed it, nor was the connection torn down).
    pub(crate) fn forget(&self, id: u32) -> bool {
        lock(&self.table).map.remove(&id).is_some()
    }

    /// No more writes; every session ends with `reason` and its handler hears of it.
    pub(crate) fn teardown(&self, reason: &str) {
        lock(&self.out).closed = true;
        let entries: Vec<Entry> = lock(&self.table).map.drain().map(|(_, e)| e).collect();
        for mut e in entries {
            e.session.end(reason);
            if let Some(sink) = e.sink.as_mut() {
                sink(Inbound::Closed(Some(reason.to_string())));
            }
        }
    }
}
