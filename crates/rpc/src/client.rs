//! The CLI side: connect, send one request at a time, stream its progress.

use crate::error::RpcError;
use crate::methods::{Method, Progress};
use crate::wire::{Reply, Request};
use crate::{MAX_REPLY_LINE, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is missing, refuses connections, or is not ours to use.
    #[error("cannot connect to bangerd at {}: {source}; {hint}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Reading from or writing to an established connection failed.
    #[error("lost the connection to bangerd ({0}); bangerd may have crashed or restarted, check its log")]
    Io(#[source] io::Error),
    /// The daemon's reply broke the protocol, or it hung up before the final line.
    #[error("bangerd's reply made no sense to this banger ({0}); make sure banger and bangerd are the same version")]
    Protocol(String),
    /// The params could not be encoded as JSON.
    #[error("could not encode the parameters of {method}: {source}")]
    Encode {
        /// The method being called.
        method: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Rpc(RpcError),
}

impl ClientError {
    fn connect(path: &Path, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => {
                "the socket belongs to another user; run banger as the user bangerd runs as"
            }
            _ => "is bangerd running? (banger starts it automatically in user mode; see `banger doctor`)",
        };
        ClientError::Connect {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

impl From<LinesCodecError> for ClientError {
    fn from(e: LinesCodecError) -> Self {
        match e {
            LinesCodecError::MaxLineLengthExceeded => ClientError::Protocol(format!(
                "a reply line is longer than {MAX_REPLY_LINE} bytes"
            )),
            LinesCodecError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                ClientError::Protocol("a reply line is not valid UTF-8".into())
            }
            LinesCodecError::Io(e) => ClientError::Io(e),
        }
    }
}

/// One connection to the daemon. Calls are sequential (`&mut self`), matching
/// the server's in-order handling; open several clients for parallel calls.
#[derive(Debug)]
pub struct Client {
    conn: Framed<UnixStream, LinesCodec>,
    next_id: u64,
    last_op_id: Option<String>,
}

impl Client {
    /// Connect to the daemon socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ClientError::connect(path, e))?;
        Ok(Self {
            conn: Framed::new(stream, LinesCodec::new_with_max_length(MAX_REPLY_LINE)),
            next_id: 1,
            last_op_id: None,
        })
    }

    /// Call method `M` with `params`, invoking `progress` for each progress line,
    /// and decode its result.
    pub async fn call<M: Method>(
        &mut self,
        params: &M::Params,
        progress: impl FnMut(Progress),
    ) -> Result<M::Result, ClientError> {
        self.call_raw(M::NAME, params, None, progress).await
    }

    /// Like [`Client::call`], choosing the op id (so the CLI can print it
    /// before the call finishes, or recognise what the call did later). The daemon
    /// refuses ids that are not 1 to 64 characters of `A-Za-z0-9._-`.
    pub async fn call_with_op_id<M: Method>(
        &mut self,
        params: &M::Params,
        op_id: &str,
        progress: impl FnMut(Progress),
    ) -> Result<M::Result, ClientError> {
        self.call_raw(M::NAME, params, Some(op_id), progress).await
    }

    /// Call method `M`, whose connection carries another protocol after its result
    /// (see [`crate::upgrade`]): returns the result and the raw connection. The client
    /// is used up; open another for further calls.
    pub async fn call_upgrade<M: Method>(
        mut self,
        params: &M::Params,
        progress: impl FnMut(Progress),
    ) -> Result<(M::Result, crate::upgrade::Upgraded), ClientError> {
        let result = self.call_raw(M::NAME, params, None, progress).await?;
        let parts = self.conn.into_parts();
        Ok((
            result,
            crate::upgrade::Upgraded::new(parts.io, parts.read_buf.to_vec()),
        ))
    }

    /// Call a method by name with any params and result types: for tests and for
    /// talking to a daemon of another version. Prefer [`Client::call`].
    pub async fn call_raw<P, R>(
        &mut self,
        method: &str,
        params: &P,
        op_id: Option<&str>,
        mut progress: impl FnMut(Progress),
    ) -> Result<R, ClientError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let id = self.next_id;
        self.next_id += 1;
        self.last_op_id = None;
        let params = serde_json::to_value(params).map_err(|source| ClientError::Encode {
            method: method.to_string(),
            source,
        })?;
        let request = Request {
            v: PROTOCOL_VERSION,
            id,
            op_id: op_id.map(str::to_string),
            method: method.to_string(),
            params,
        };
        let line = serde_json::to_string(&request).map_err(|source| ClientError::Encode {
            method: method.to_string(),
            source,
        })?;
        self.conn.send(line).await?;

        loop {
            let Some(line) = self.conn.next().await.transpose()? else {
                return Err(ClientError::Protocol(format!(
                    "the connection closed before the final reply to {method}"
                )));
            };
            let reply: Reply = serde_json::from_str(&line).map_err(|e| {
                ClientError::Protocol(format!("reply is not a valid reply line: {e}"))
            })?;
            if reply.v != PROTOCOL_VERSION {
                return Err(ClientError::Protocol(format!(
                    "reply speaks protocol version {}, this banger speaks {PROTOCOL_VERSION}",
                    reply.v
                )));
            }
            // The server answers id 0 when it could not read our id at all.
            let ours = reply.id == id || (reply.id == 0 && reply.error.is_some());
            if !ours {
                return Err(ClientError::Protocol(format!(
                    "got a reply for request {} while waiting for {id}",
                    reply.id
                )));
            }
            match (reply.progress, reply.result, reply.error) {
                (Some(p), None, None) => progress(p),
                (None, Some(result), None) => {
                    self.last_op_id = reply.op_id;
                    return serde_json::from_value(result).map_err(|e| {
                        ClientError::Protocol(format!(
                            "result of {method} has an unexpected shape: {e}"
                        ))
                    });
                }
                (None, None, Some(err)) => {
                    self.last_op_id = err.op_id.clone();
                    return Err(ClientError::Rpc(err));
                }
                _ => {
                    return Err(ClientError::Protocol(
                        "reply line must carry exactly one of progress, result or error".into(),
                    ))
                }
            }
        }
    }

    /// The op id of the last call that got a final reply, for "see the daemon
    /// log for op-…" hints.
    pub fn last_op_id(&self) -> Option<&str> {
        self.last_op_id.as_deref()
    }
}
