//! The connection's two byte-pump tasks: the reader decodes frames and files them
//! into the sessions' queues; the writer sends queued frames whole, in order, and
//! flushes the goaway when the connection closes. Kept apart from the connection's
//! state so each side of the stream reads on its own.

use super::{Shared, Stop, READ_BUF};
use crate::decoder::Decoder;
use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::sync::{mpsc, watch};
use std::sync::Arc;
use std::time::Duration;

/// How long a failed write waits for the reader to learn why the peer left.
const PEER_REASON_GRACE: Duration = Duration::from_millis(250);

/// How long a closing connection may take to flush its last frames (the goaway).
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

pub(super) async fn reader<R: AsyncRead + Unpin>(
    mut r: R,
    mut dec: Decoder,
    leftover: Vec<u8>,
    shared: Arc<Shared>,
    mut closed: watch::Receiver<Option<String>>,
) {
    let feed = |dec: &mut Decoder, mut bytes: &[u8]| -> Result<(), Stop> {
        while !bytes.is_empty() {
            let (n, f) = dec
                .decode(bytes)
                .map_err(|e| Stop::Violation(format!("the peer broke the framing: {e}")))?;
            bytes = &bytes[n..];
            if let Some(f) = f {
                shared.dispatch(f)?;
            }
        }
        Ok(())
    };
    let mut buf = vec![0u8; READ_BUF];
    let stop = async {
        feed(&mut dec, &leftover)?;
        loop {
            let n = ::tokio::select! {
                r = r.read(&mut buf) => r.map_err(|e| Stop::Quiet(format!("reading the channel failed: {e}")))?,
                _ = closed.changed() => return Ok(()),
            };
            if n == 0 {
                return Err(Stop::Quiet("the peer closed the channel".into()));
            }
            feed(&mut dec, &buf[..n])?;
        }
    }
    .await;
    match stop {
        Ok(()) => {}
        Err(Stop::Violation(m)) => shared.shutdown(format!("protocol violation: {m}"), true),
        Err(Stop::Quiet(m)) => shared.shutdown(m, false),
    }
}

pub(super) async fn writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
    mut closed: watch::Receiver<Option<String>>,
) {
    loop {
        let buf = ::tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(b) => b,
                None => break,
            },
            _ = closed.changed() => break,
        };
        let wrote = async {
            w.write_all(&buf).await?;
            while let Ok(more) = rx.try_recv() {
                w.write_all(&more).await?;
            }
            w.flush().await
        };
        let r = ::tokio::select! {
            r = wrote => r,
            _ = closed.changed() => break,
        };
        if let Err(e) = r {
            // The peer hung up; its goaway saying why may be in the read buffer still.
            // Give the reader a moment to report that better reason first.
            let _ = ::tokio::time::timeout(PEER_REASON_GRACE, closed.changed()).await;
            shared.shutdown(format!("writing the channel failed: {e}"), false);
            return;
        }
    }
    // Closing: flush what is queued (the goaway), within a bound.
    let _ = ::tokio::time::timeout(CLOSE_FLUSH, async {
        while let Ok(b) = rx.try_recv() {
            w.write_all(&b).await?;
        }
        w.flush().await?;
        w.shutdown().await
    })
    .await;
}
