//! Collecting a guest command's output in memory, up to a cap (`vm run --capture`,
//! parallel attempts): what a script gets back in JSON must be bounded whatever the
//! guest prints. Past the cap the bytes are counted and dropped, never buffered, and
//! the command is not slowed down or stopped.

use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Default cap per stream for `--capture`.
pub const DEFAULT_CAP: usize = 1024 * 1024;

/// An in-memory sink keeping the first `cap` bytes.
#[derive(Debug)]
pub struct Capture {
    buf: Vec<u8>,
    cap: usize,
    total: u64,
}

impl Capture {
    /// A sink keeping up to `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            total: 0,
        }
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.buf.len() as u64
    }

    /// The JSON form.
    pub fn captured(&self) -> Captured {
        Captured {
            text: String::from_utf8_lossy(&self.buf).into_owned(),
            bytes: self.total,
            truncated: self.truncated(),
        }
    }
}

/// A captured stream as it appears in JSON (docs/json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Captured {
    /// The first bytes (up to the cap), as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// How many bytes the command wrote in all.
    pub bytes: u64,
    /// Whether `text` stops short of `bytes`.
    pub truncated: bool,
}

impl AsyncWrite for Capture {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let room = self.cap.saturating_sub(self.buf.len());
        let keep = room.min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        self.total = self.total.saturating_add(data.len() as u64);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut c = Capture::new(4);
        c.write_all(b"ab").await.unwrap();
        assert!(!c.truncated());
        c.write_all(b"cdef\xff").await.unwrap();
        assert_eq!(c.bytes(), b"abcd");
        let j = c.captured();
        assert_eq!((j.text.as_str(), j.bytes, j.truncated), ("abcd", 7, true));
    }
}
