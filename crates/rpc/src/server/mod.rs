//! The daemon side: a method table, the accept loop and socket setup.

mod bind;
mod context;
mod router;
mod serve;

pub use bind::{bind, BindError};
pub use context::{CallCtx, ProgressSink};
pub use router::{HandlerFuture, Router, RouterError};
pub use serve::serve;
