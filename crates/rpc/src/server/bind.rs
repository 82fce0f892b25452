//! Creating the daemon's socket safely.
//!
//! A daemon that crashed leaves its socket file behind; a second daemon must
//! replace that but must never steal the socket of one that is still alive.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

/// Why the daemon socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answered on the socket.
    #[error("another bangerd is already listening on {0}; stop it first, or just use it")]
    AlreadyRunning(PathBuf),
    /// Something other than a socket sits where the socket belongs.
    #[error("{0} exists and is not a socket; move it away so bangerd can create its socket there")]
    NotASocket(PathBuf),
    /// `bind` was called outside a tokio runtime.
    #[error("bangerd tried to bind {0} outside a tokio runtime (a bug); please report it")]
    NoRuntime(PathBuf),
    /// A filesystem or socket operation failed.
    #[error("could not {action} {path}: {source}; check that the directory exists and is writable by this user")]
    Io {
        /// What was being done (`create the socket directory`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Bind the daemon socket at `path`.
///
/// Creates the parent directory (0700) if needed, replaces a stale socket file
/// that nobody answers on, refuses if another daemon answers, and leaves the
/// socket at mode 0600. Must be called from within a tokio runtime, like
/// tokio's own `bind`.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BindError::NoRuntime(path.to_path_buf()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("create the socket directory", parent))?;
    }
    remove_if_stale(path)?;
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            // Lost a race with another daemon starting at the same moment.
            BindError::AlreadyRunning(path.to_path_buf())
        } else {
            io_err("bind the socket", path)(e)
        }
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("set the mode of the socket", path))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_err("configure the socket", path))?;
    UnixListener::from_std(std_listener).map_err(io_err("register the socket", path))
}

/// [`bind`], plus the [`super::SocketOwner`] that removes the socket at shutdown
/// only if the path still names this socket (never a newer daemon's).
pub fn bind_owned(path: &Path) -> Result<(UnixListener, super::SocketOwner), BindError> {
    let listener = bind(path)?;
    let owner = super::SocketOwner::record(path).map_err(io_err("inspect the new socket", path))?;
    Ok((listener, owner))
}

fn remove_if_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect the existing socket", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("remove the stale socket", path)(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("probe the existing socket", path)(e)),
    }
}
