//! Relaying one session between two connections: the daemon stands between the CLI
//! (which asked for an exec or a transfer) and the guest agent (which does it).
//!
//! The relay holds at most one chunk per direction: it reads a stream only when it
//! may write the chunk on the other side, so each side's flow control reaches the
//! other end (a CLI that stops reading stdout stops the guest process, a process that
//! stops reading stdin stops the CLI), and a misbehaving side costs the daemon no
//! more than the windows it granted.

use super::{Session, SessionError};
use crate::msg::{Control, ErrorKind, ErrorReply};
use crate::Stream;
use std::future::pending;

/// How a [`splice`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spliced {
    /// The work ended and its last message (exit status, done, error) was passed on.
    Finished,
    /// The requester left or closed its side first: the work was hung up.
    RequesterLeft,
    /// The worker's side failed (its connection broke, a protocol violation): the
    /// requester was told why.
    WorkerFailed(String),
}

/// Relay `down` (the requester's session: this side accepted or attached it, so it
/// receives `in` and sends `out`, `err` and the answers) and `up` (the session this
/// side opened towards the worker) until the work ends or either side leaves.
///
/// From the requester: `in` data and its end, and the signal and resize messages
/// (anything else it sends is ignored). From the worker: `out` and `err` data and
/// their ends, then its final message (`exit`, `done` or `error`), passed on after
/// the output, so the requester sees all output before the status. If the requester
/// leaves, `up` is closed (the worker hangs the process up); if the worker's side
/// fails, the requester gets an `error` saying why.
pub async fn splice(down: &Session, up: &Session) -> Spliced {
    let requests = async {
        loop {
            match down.control().await {
                Ok(Some(c @ (Control::Signal { .. } | Control::Resize(_)))) => {
                    if up.send(&c).is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        up.close();
        pending::<()>().await
    };
    let input = async {
        loop {
            match down.read(Stream::In).await {
                Ok(Some(chunk)) => {
                    if up.write_all(Stream::In, &chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = up.eof(Stream::In);
                    break;
                }
                Err(_) => break,
            }
        }
        pending::<()>().await
    };
    let answers = async {
        let (out, err) = tokio::join!(
            copy_out(up, down, Stream::Out),
            copy_out(up, down, Stream::Err)
        );
        let mut worker = None;
        for r in [out, err] {
            match r {
                Ok(()) => {}
                Err(Copy::Requester) => return Spliced::RequesterLeft,
                Err(Copy::Worker(SessionError::Lost(why))) => worker = Some(why),
                // Closed here (the requester left) or by the worker: the controls say.
                Err(Copy::Worker(_)) => {}
            }
        }
        if worker.is_none() {
            loop {
                match up.control().await {
                    Ok(Some(c)) => {
                        let last =
                            matches!(c, Control::Exit(_) | Control::Done(_) | Control::Error(_));
                        if down.send(&c).is_err() {
                            return Spliced::RequesterLeft;
                        }
                        if last {
                            return Spliced::Finished;
                        }
                    }
                    // Closed without a final message: the requester sees the close.
                    Ok(None) => return Spliced::Finished,
                    Err(SessionError::Lost(why)) => {
                        worker = Some(why);
                        break;
                    }
                    Err(_) => return Spliced::RequesterLeft,
                }
            }
        }
        let why = worker.unwrap_or_default();
        let _ = down.send(&Control::Error(ErrorReply::new(
            ErrorKind::Failed,
            format!("the guest agent's channel failed: {why}"),
        )));
        Spliced::WorkerFailed(why)
    };
    let end = tokio::select! {
        end = answers => end,
        () = requests => Spliced::RequesterLeft,
        () = input => Spliced::RequesterLeft,
    };
    down.close();
    up.close();
    end
}

/// Which side a copy failed on.
enum Copy {
    /// Reading from the worker failed.
    Worker(SessionError),
    /// Writing to the requester failed (it left).
    Requester,
}

/// Copy an output stream from `up` to `down` until its end (also passed on).
async fn copy_out(up: &Session, down: &Session, stream: Stream) -> Result<(), Copy> {
    loop {
        match up.read(stream).await {
            Ok(Some(chunk)) => down
                .write_all(stream, &chunk)
                .await
                .map_err(|_| Copy::Requester)?,
            Ok(None) => {
                return down.eof(stream).map_err(|_| Copy::Requester);
            }
            Err(e) => return Err(Copy::Worker(e)),
        }
    }
}
