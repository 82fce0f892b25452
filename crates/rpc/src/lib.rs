//! banger's RPC: one JSON object per line over a unix socket.
//!
//! Why this shape: the CLI and `bangerd` always run on the same host, so a unix
//! socket gives us SO_PEERCRED authentication for free, and JSON lines can be
//! driven by hand (`socat - UNIX:bangerd.sock`) when debugging. jsonrpsee has no
//! unix-socket transport, and the protocol is small enough to own.
//!
//! A request is answered by zero or more progress lines and exactly one final
//! line (result or error). Every call carries an `op_id` that also tags the
//! daemon's log lines, so an error shown by the CLI can be found in the log.

pub mod client;
pub mod error;
pub mod methods;
pub mod server;
pub mod upgrade;
mod wire;

pub use client::{Client, ClientError};
pub use error::{ErrorCode, RpcError};
pub use methods::*;
pub use server::{
    bind, bind_owned, lock_state_dir, serve, serve_with_options, BindError, CallCtx, HandlerFuture,
    LockError, ProgressSink, Router, RouterError, ServeOptions, SocketOwner, StateLock,
};
pub use upgrade::{UpgradeFn, Upgraded};

/// The protocol version spoken by this build (`"v"` in every line).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the server accepts. Requests are small; the cap stops a
/// confused or hostile peer from making the daemon buffer without bound.
pub const MAX_REQUEST_LINE: usize = 1024 * 1024;

/// Longest reply line the client accepts. Larger than the request cap because
/// list replies grow with the number of VMs and images.
pub const MAX_REPLY_LINE: usize = 16 * 1024 * 1024;
