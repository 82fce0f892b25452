//! The daemon side: a method table, the accept loop and socket setup.

mod bind;
mod context;
mod limits;
mod lock;
mod router;
mod serve;

pub use bind::{bind, bind_owned, BindError};
pub use context::{CallCtx, ProgressSink};
pub use limits::ServeOptions;
pub use lock::{lock_state_dir, LockError, SocketOwner, StateLock, LOCK_FILE};
pub use router::{HandlerFuture, Router, RouterError};
pub use serve::{parse_request, serve, serve_with_options, ParsedRequest};
