//! Tar streams into and out of the guest (workspaces, `vm cp`).

use super::{AgentClient, ClientError};
use banger_channel::tokio::{Session, StreamReader};
use banger_channel::{Control, Done, Get, Open, Put, Stream};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Wait for the session's answer: `Started` (`Ok(None)`), `Done`, or an error.
async fn answer(s: &Session, request: &'static str) -> Result<Option<Done>, ClientError> {
    match s.control().await? {
        Some(Control::Started { .. }) => Ok(None),
        Some(Control::Done(d)) => Ok(Some(d)),
        Some(Control::Error(e)) => Err(ClientError::Refused(e)),
        Some(c) => Err(ClientError::Unexpected {
            request,
            answer: format!("{c:?}"),
        }),
        None => Err(ClientError::NoAnswer),
    }
}

async fn done(s: &Session, request: &'static str) -> Result<Done, ClientError> {
    loop {
        if let Some(d) = answer(s, request).await? {
            return Ok(d);
        }
    }
}

/// A tar stream coming out of the guest; read it to the end, then [`finish`].
///
/// [`finish`]: GetStream::finish
#[derive(Debug)]
pub struct GetStream {
    session: Session,
    reader: StreamReader,
}

impl GetStream {
    /// The agent's summary once the stream was read to its end.
    pub async fn finish(self) -> Result<Done, ClientError> {
        done(&self.session, "get").await
    }
}

impl AsyncRead for GetStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AgentClient {
    /// Unpack the tar stream `src` into the guest directory `dir` (created if missing).
    /// With `preserve_owner` the entries keep their uid/gid; otherwise root owns them.
    pub async fn put<R>(
        &self,
        dir: &str,
        preserve_owner: bool,
        mut src: R,
    ) -> Result<Done, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let s = self
            .open(&Open::Put(Put {
                dir: dir.to_string(),
                preserve_owner,
            }))
            .await?;
        if let Some(d) = answer(&s, "put").await? {
            return Ok(d);
        }
        let mut w = s.writer(Stream::In);
        let copied = tokio::io::copy(&mut src, &mut w).await;
        match copied {
            Ok(_) => s.eof(Stream::In)?,
            // The agent gave up (its error is in the control queue), or our source
            // failed: tell them apart by asking the session.
            Err(e)
                if e.get_ref()
                    .is_some_and(|i| i.is::<banger_channel::tokio::SessionError>()) => {}
            Err(source) => {
                s.close();
                return Err(ClientError::Io {
                    what: "reading the tar stream to put".into(),
                    source,
                });
            }
        }
        done(&s, "put").await
    }

    /// A tar stream of the guest path `path`, entries named from its last component.
    pub async fn get(&self, path: &str) -> Result<GetStream, ClientError> {
        let s = self
            .open(&Open::Get(Get {
                path: path.to_string(),
            }))
            .await?;
        if let Some(d) = answer(&s, "get").await? {
            return Err(ClientError::Unexpected {
                request: "get",
                answer: format!("Done({d:?}) before any data"),
            });
        }
        Ok(GetStream {
            reader: s.reader(Stream::Out),
            session: s,
        })
    }
}
