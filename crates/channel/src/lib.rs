//! banger's agent channel: many sessions (execs, file transfers, health checks) over one
//! byte stream between the host and the guest agent — a virtio-serial port under QEMU,
//! a vsock connection under Firecracker.
//!
//! * [`frame`]: `[u32 len][u32 session][u8 kind][payload]` frames; [`decoder`] turns
//!   bytes into checked frames with bounded memory.
//! * [`msg`]: the JSON messages (hello, requests, in-session control messages).
//! * [`flow`]: per-stream credit, so no side buffers more than it granted.
//! * [`sync`]: the blocking server the agent runs (std threads).
//! * `tokio` (feature `tokio`): the async connection the host runs, either role.
//!
//! The wire format, limits and version rule are described in `docs/channel.md`.
#![warn(missing_docs)]

pub mod decoder;
pub mod flow;
pub mod frame;
pub mod limits;
pub mod msg;
pub mod sync;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use frame::{FrameError, Kind, Stream};
pub use limits::Limits;
pub use msg::{
    Command, Control, Done, ErrorKind, ErrorReply, Exec, ExitStatus, Get, Hello, Identity, Open,
    Pong, Put, Role, User, WinSize,
};
