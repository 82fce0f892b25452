//! Handing a connection over to another protocol after a call's result line.
//!
//! A method (`vm.exec`) answers with one result line and then turn the
//! connection into something else: a `banger-channel` connection carrying one session
//! that the daemon relays to a guest. The handler registers what to run on the raw
//! stream ([`crate::CallCtx::upgrade`]); the server writes the result line, stops
//! reading lines, and hands the stream over, with any bytes its line reader had
//! already buffered. The client does the same after reading the result
//! ([`crate::Client::call_upgrade`]). The RPC server's line limits and read timeouts no
//! longer apply: the new protocol brings its own bounds.

use futures::future::BoxFuture;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// The raw connection after the upgrade: reads return the bytes the line reader had
/// buffered first, then the socket's.
#[derive(Debug)]
pub struct Upgraded {
    io: UnixStream,
    leftover: Vec<u8>,
    pos: usize,
}

impl Upgraded {
    pub(crate) fn new(io: UnixStream, leftover: Vec<u8>) -> Self {
        Self {
            io,
            leftover,
            pos: 0,
        }
    }

    /// The socket (for its credentials; reading it directly skips buffered bytes).
    pub fn socket(&self) -> &UnixStream {
        &self.io
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.leftover.len() {
            let n = buf.remaining().min(self.leftover.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.leftover[start..start + n]);
            self.pos += n;
            if self.pos == self.leftover.len() {
                self.leftover = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a handler runs on the upgraded connection.
pub type UpgradeFn = Box<dyn FnOnce(Upgraded) -> BoxFuture<'static, ()> + Send>;

/// Where a handler leaves its [`UpgradeFn`] for the server. Dropped unused when the
/// call fails or the client is gone before the result line was written.
#[derive(Clone, Default)]
pub(crate) struct UpgradeSlot(Arc<Mutex<Option<UpgradeFn>>>);

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

impl UpgradeSlot {
    pub(crate) fn set(&self, f: UpgradeFn) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    pub(crate) fn take(&self) -> Option<UpgradeFn> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}
