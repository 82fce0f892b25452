//! Why a system install, removal or `system run` failed.

use std::path::PathBuf;

/// Why a system operation failed; every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The operation changes the system and needs root.
    #[error("{0} needs root: run it with sudo")]
    NotRoot(&'static str),
    /// No owner was given and none could be inferred.
    #[error("no owner for the VMs: pass --owner USER (the user who will run banger; sudo sets SUDO_USER for you)")]
    NoOwner,
    /// The owner is root.
    #[error("the owner must be an unprivileged user, not root: root can use banger without a system install (it runs everything in-process)")]
    OwnerIsRoot,
    /// The user does not exist.
    #[error("no user named {0:?} on this host; create it first or pass another --owner")]
    UnknownUser(String),
    /// A binary to install is missing.
    #[error("{0} is missing; build it first (make build, or cargo build --release -p banger-cli -p banger-daemon -p banger-helper, and make agent)")]
    MissingBinary(PathBuf),
    /// The helper config belongs to another owner.
    #[error("{path} serves uid {configured}, not {owner} (uid {uid}); run `sudo banger system install --owner {owner}` to change the owner, or pass --owner for the configured user")]
    OtherOwner {
        /// The helper config.
        path: PathBuf,
        /// Its owner uid.
        configured: u32,
        /// The requested owner's name.
        owner: String,
        /// The requested owner's uid.
        uid: u32,
    },
    /// systemd is not the init system here.
    #[error("systemd is not running as PID 1 here (a container, WSL or another init system), so {0} has no units to act on; run `sudo banger system run --owner USER` under your supervisor instead")]
    NoSystemd(&'static str),
    /// systemctl failed.
    #[error(
        "systemctl {args} failed ({status}): {stderr}; see `journalctl -u bangerd-root -u bangerd`"
    )]
    Systemctl {
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// The daemon did not answer after a start.
    #[error("bangerd did not answer on {socket} within {seconds} s: {reason}; see `journalctl -u bangerd` (or the output of `banger system run`)")]
    DaemonNotAnswering {
        /// The daemon socket.
        socket: PathBuf,
        /// How long we waited.
        seconds: u64,
        /// The last error.
        reason: String,
    },
    /// The helper did not answer after a start.
    #[error("banger-helper did not answer on {socket}: {reason}")]
    HelperNotAnswering {
        /// The helper socket.
        socket: PathBuf,
        /// The last error.
        reason: String,
    },
    /// The install record or helper config is unreadable.
    #[error("{path} is not valid: {reason}; reinstall with `sudo banger system install`")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A child process of `system run` could not be started or failed.
    #[error("{what}: {reason}")]
    Child {
        /// Which one ("banger-helper", "bangerd").
        what: &'static str,
        /// What happened.
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An I/O error constructor for `map_err`.
pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> SystemError {
    let path = path.to_path_buf();
    move |source| SystemError::Io { what, path, source }
}
