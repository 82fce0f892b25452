//! The typed privileged interface of banger.
//!
//! The daemon never performs root-only host operations itself: it builds a [`PrivOp`]
//! and hands it to a [`Privileged`] implementation. Every implementation validates
//! the operation before acting, so a compromised or buggy daemon can only ask for
//! banger-shaped things (its own taps, a bridge on a private subnet), never
//! arbitrary network changes.
//!
//! [`InProcess`] runs the operations in the daemon's own process, for when it runs
//! as root. A separate root helper serving the same (serde-serialisable) enum over a
//! socket will be the second implementation.

mod error;
mod in_process;
mod op;
mod validate;

pub use error::HelperError;
pub use in_process::InProcess;
pub use op::PrivOp;

/// Something that can carry out privileged operations.
///
/// Object safe (through `async_trait`) so the daemon can hold an
/// `Arc<dyn Privileged>` and not care whether it is root itself or talks to the
/// helper.
#[async_trait::async_trait]
pub trait Privileged: Send + Sync {
    /// Validate `op` and carry it out. Implementations must refuse anything
    /// [`PrivOp::validate`] refuses.
    async fn run(&self, op: PrivOp) -> Result<(), HelperError>;
}
