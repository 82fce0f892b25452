//! The daemon's error type and its one conversion to the wire.
//!
//! Services return [`DaemonError`]: a variant per kind of failure, each keeping the
//! library error that caused it as its `source`, so the daemon log and tests see the
//! real cause, not a string that once was one. The method table (`routes.rs`) turns it
//! into the wire [`RpcError`] through the `From` impl below, the only place that picks
//! error codes. Messages follow the project rule: what failed, then what to do next
//! (the libraries' own messages already carry the "what to do").

use banger_rpc::{ErrorCode, RpcError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The daemon's result type.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

/// A library error carried as a cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a daemon service call failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The request is malformed or not allowed in the current state; the message says
    /// what to change.
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name the request would create is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The state database refused or failed (its messages say what to do).
    #[error(transparent)]
    Store(Box<banger_store::StoreError>),
    /// A privileged host operation (bridge, tap, NAT) failed.
    #[error("{what} failed: {source}")]
    Host {
        /// What was being done.
        what: String,
        /// The helper's error.
        #[source]
        source: Box<banger_helper::HelperError>,
    },
    /// The VMM backend failed.
    #[error("{what} failed: {source}")]
    Vmm {
        /// What was being done.
        what: String,
        /// The backend's error.
        #[source]
        source: Box<banger_vmm::VmmError>,
    },
    /// The guest did not do what was asked in time.
    #[error("{what}: {source}{console}")]
    Guest {
        /// What was being waited for.
        what: String,
        /// Why it did not happen.
        #[source]
        source: Box<crate::vm::guest::GuestError>,
        /// The guest console's last lines (`; last console lines …`), or empty.
        console: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Making an image, kernel or disk failed in a library or tool.
    #[error("{what} failed: {source}")]
    Build {
        /// What was being made.
        what: String,
        /// The library's error.
        #[source]
        source: Cause,
    },
    /// A blocking task panicked or was cancelled: a bug.
    #[error("{what} stopped unexpectedly ({source}); this is a bug, please report it with the daemon log")]
    Task {
        /// The task.
        what: &'static str,
        /// Tokio's report.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Rootless mode's network stack (passt) did not come up; the message has its log.
    #[error("{0}")]
    UserNet(String),
    /// A fault injected by a failpoint (`BANGER_FAIL_AT`, for tests).
    #[error("injected failure at stage {0} (BANGER_FAIL_AT)")]
    Injected(String),
    /// The outcome of another request for the same result, which this one waited for
    /// (see `coalesce.rs`).
    #[error(transparent)]
    Shared(Arc<DaemonError>),
}

impl DaemonError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DaemonError::BadRequest(_) => ErrorCode::BadRequest,
            DaemonError::NotFound(_) => ErrorCode::NotFound,
            DaemonError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            DaemonError::Store(e) if e.is_not_found() => ErrorCode::NotFound,
            DaemonError::Store(e) if e.is_name_taken() => ErrorCode::AlreadyExists,
            DaemonError::Shared(e) => e.code(),
            _ => ErrorCode::OperationFailed,
        }
    }

    /// `|source| Io { what, path, source }`, for `map_err`.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
        let path = path.to_path_buf();
        move |source| DaemonError::Io { what, path, source }
    }

    /// `|source| Build { what, source }`, for `map_err` on a library's error.
    pub fn build<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> DaemonError {
        let what = what.into();
        move |e| DaemonError::Build {
            what,
            source: e.into(),
        }
    }

    /// `|source| Task { what, source }`, for a `spawn_blocking` join.
    pub fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> DaemonError {
        move |source| DaemonError::Task { what, source }
    }

    /// `|source| Vmm { what, source }`.
    pub fn vmm(what: impl Into<String>) -> impl FnOnce(banger_vmm::VmmError) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Vmm {
            what,
            source: Box::new(source),
        }
    }

    /// `|source| Host { what, source }`.
    pub fn host(what: impl Into<String>) -> impl FnOnce(banger_helper::HelperError) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Host {
            what,
            source: Box::new(source),
        }
    }

    /// `|source| Guest { what, source, console }`.
    pub fn guest(
        what: impl Into<String>,
        console: String,
    ) -> impl FnOnce(crate::vm::guest::GuestError) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Guest {
            what,
            source: Box::new(source),
            console,
        }
    }
}

impl From<banger_store::StoreError> for DaemonError {
    fn from(e: banger_store::StoreError) -> DaemonError {
        DaemonError::Store(Box::new(e))
    }
}

/// The one conversion to the wire: code from the variant, message from `Display`.
impl From<DaemonError> for RpcError {
    fn from(e: DaemonError) -> RpcError {
        RpcError::new(e.code(), e.to_string())
    }
}

/// Run a blocking closure on tokio's blocking pool, flattening its join error.
pub async fn blocking<T, F>(what: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(DaemonError::task(what))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_variant_and_messages_keep_the_cause() {
        let e = DaemonError::NotFound("no VM named x".into());
        let r = RpcError::from(e);
        assert_eq!(
            (r.code, r.message.as_str()),
            (ErrorCode::NotFound, "no VM named x")
        );

        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = DaemonError::io("create", Path::new("/x"))(io);
        assert_eq!(e.to_string(), "create /x: denied");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        assert_eq!(e.code(), ErrorCode::OperationFailed);

        let e =
            DaemonError::build::<String>("creating the overlay disk")("mkfs.ext4 failed".into());
        assert_eq!(
            e.to_string(),
            "creating the overlay disk failed: mkfs.ext4 failed"
        );

        let shared = DaemonError::Shared(Arc::new(DaemonError::AlreadyExists("taken".into())));
        assert_eq!(RpcError::from(shared).code, ErrorCode::AlreadyExists);
        assert_eq!(
            DaemonError::Injected("boot".into()).to_string(),
            "injected failure at stage boot (BANGER_FAIL_AT)"
        );
    }

    #[test]
    fn errors_stay_small() {
        // Boxed causes keep every Result<_, DaemonError> cheap to move.
        assert!(
            std::mem::size_of::<DaemonError>() <= 64,
            "{}",
            std::mem::size_of::<DaemonError>()
        );
    }

    #[test]
    fn store_errors_map_to_their_codes() {
        let e = DaemonError::from(banger_store::StoreError::VmNotFound("x".into()));
        assert_eq!(e.code(), ErrorCode::NotFound);
    }
}
