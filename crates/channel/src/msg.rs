//! The JSON messages: the hello, session requests ([`Open`]) and the messages within a
//! session ([`Control`]). Unknown fields are ignored so a newer peer may add optional
//! ones within a protocol version; a new message type needs a new version.

use crate::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which end of the connection a side is: the client opens sessions with odd numbers,
/// the server with even ones (banger's agent is the server and opens none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Connected (the host).
    Client,
    /// Accepted (the guest agent).
    Server,
}

/// First frame of each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Highest protocol version the sender speaks.
    pub protocol: u32,
    /// Lowest protocol version the sender speaks.
    pub min_protocol: u32,
    /// The sender's role.
    pub role: Role,
    /// The sender's software and version, for messages (`banger-agent 0.1.0`).
    pub software: String,
    /// The client's random number for this connection, echoed by the server. On a
    /// virtio-serial port the guest may still flush replies meant for an earlier host
    /// connection (preamble and hello included) into a new one; the client skips every
    /// hello that does not carry its own nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
}

/// Why two hellos do not make a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// No protocol version both sides speak.
    #[error("no common protocol version: this side speaks {ours_min}..={ours}, {peer_software} speaks {theirs_min}..={theirs}; update the older of the two (the guest agent is updated by rebuilding the image)")]
    NoCommonVersion {
        /// Our lowest.
        ours_min: u32,
        /// Our highest.
        ours: u32,
        /// Peer's lowest.
        theirs_min: u32,
        /// Peer's highest.
        theirs: u32,
        /// Peer's software string.
        peer_software: String,
    },
    /// Both sides claim the same role.
    #[error("both sides of the connection claim the {0:?} role")]
    SameRole(Role),
}

impl Hello {
    /// This build's hello for `role`, without a nonce.
    pub fn new(role: Role, software: impl Into<String>) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            min_protocol: MIN_PROTOCOL_VERSION,
            role,
            software: software.into(),
            nonce: None,
        }
    }

    /// A fresh random nonce (per-process random keys mixed with a counter: unique
    /// enough to tell connections of one host apart, no dependency needed).
    pub fn fresh_nonce() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// The version both sides use: the highest both speak. Both sides compute the same.
    pub fn negotiate(&self, peer: &Hello) -> Result<u32, VersionError> {
        if self.role == peer.role {
            return Err(VersionError::SameRole(self.role));
        }
        let v = self.protocol.min(peer.protocol);
        if v < self.min_protocol.max(peer.min_protocol) {
            return Err(VersionError::NoCommonVersion {
                ours_min: self.min_protocol,
                ours: self.protocol,
                theirs_min: peer.min_protocol,
                theirs: peer.protocol,
                peer_software: peer.software.clone(),
            });
        }
        Ok(v)
    }
}

/// Last frame of a side that closes the connection on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goaway {
    /// Why (a protocol error, a version mismatch, shutting down).
    pub message: String,
}

/// What a session is for: the payload of its open frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Open {
    /// Is the agent up? Answered with [`Control::Pong`].
    Ping,
    /// Listening TCP ports. Answered with [`Control::Ports`].
    Ports,
    /// Flush and power off. Answered with [`Control::Done`] before the guest goes down.
    Shutdown,
    /// Run a process; see [`Exec`].
    Exec(Exec),
    /// Unpack the tar stream sent on [`crate::Stream::In`] into a directory.
    Put(Put),
    /// Send a tar stream of a path on [`crate::Stream::Out`].
    Get(Get),
    /// Become a new machine: a guest restored from a warm snapshot takes its own
    /// identity before anything else runs in it. Answered with [`Control::Done`].
    Identity(Identity),
}

/// A restored guest's new identity (see docs/warm.md). Every field is applied; the
/// answer is an error naming the first that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Host name (also written to `/etc/hostname`).
    pub hostname: String,
    /// MAC address of `eth0`, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// IPv4 address of `eth0` with its prefix, `a.b.c.d/n`.
    pub address: String,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Name servers for `/etc/resolv.conf` (left alone when empty).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `/etc/machine-id`: 32 lowercase hex digits.
    pub machine_id: String,
    /// The boot id userspace reads from `/proc/sys/kernel/random/boot_id` (a UUID).
    pub boot_id: String,
    /// Host randomness credited to the guest's pool, then the CRNG reseeded: hex,
    /// at most 512 bytes.
    pub entropy: String,
    /// The host's wall clock, nanoseconds since the Unix epoch, stepped in at once.
    pub time_ns: u64,
    /// A new ssh host private key (OpenSSH format, ed25519) replacing the one the
    /// snapshot's template had; its public half is derived in the guest. None leaves
    /// the key alone.
    #[serde(default)]
    pub host_key: Option<String>,
    /// The public half of `host_key` (`ssh-ed25519 AAAA…`), written beside it (the
    /// host made the pair; deriving it in the guest would cost a process under
    /// emulation).
    #[serde(default)]
    pub host_key_public: Option<String>,
}

/// A process to run. The acceptor answers [`Control::Started`] (or [`Control::Error`]),
/// streams its output, and ends with [`Control::Exit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// What to run.
    pub command: Command,
    /// Variables set on top of the base environment (`PATH`, `HOME`, `USER`,
    /// `LOGNAME`, `SHELL`, and `TERM` with a pty).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the base one.
    #[serde(default)]
    pub clear_env: bool,
    /// Working directory (default: the user's home, or `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Who runs it (default: root).
    #[serde(default)]
    pub user: Option<User>,
    /// Run on a pseudo-terminal of this size (stdout then carries the terminal's output;
    /// stderr stays empty). Without it stdin, stdout and stderr are pipes.
    #[serde(default)]
    pub pty: Option<WinSize>,
}

/// What an exec runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A program and its arguments; the program is looked up in the exec's `PATH`.
    Argv(Vec<String>),
    /// A line for `/bin/sh -c`.
    Shell(String),
    /// The user's login shell, as a login shell (an interactive session).
    LoginShell,
}

/// A user by name (looked up in the guest's `/etc/passwd`) or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum User {
    /// A numeric uid (need not exist in `/etc/passwd`).
    Uid(u32),
    /// A user name.
    Name(String),
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Where a put unpacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// Absolute directory in the guest, created (with its parents) if missing.
    pub dir: String,
    /// Keep the uid/gid of the tar's entries (default: owned by the agent, i.e. root).
    #[serde(default)]
    pub preserve_owner: bool,
}

/// What a get sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    /// Absolute path in the guest; the tar's entries are named from its last component
    /// (like `tar -C dirname basename`). Symlinks are archived as links, never followed.
    pub path: String,
}

/// A message within a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Acceptor: the request was accepted and its work began (the process id for an
    /// exec; none for put and get). Data follows.
    Started {
        /// The process, for an exec.
        #[serde(default)]
        pid: Option<u32>,
    },
    /// Acceptor: the process ended. Its output streams were closed before this.
    Exit(ExitStatus),
    /// Acceptor: answer to [`Open::Ping`].
    Pong(Pong),
    /// Acceptor: answer to [`Open::Ports`].
    Ports {
        /// Listening TCP ports, sorted, unique.
        ports: Vec<u16>,
    },
    /// Acceptor: a shutdown, put or get finished.
    Done(Done),
    /// Acceptor: the request failed; nothing else follows.
    Error(ErrorReply),
    /// Opener: deliver a signal to the process (its foreground process group on a pty).
    Signal {
        /// Linux signal number.
        signal: i32,
    },
    /// Opener: the terminal's new size.
    Resize(WinSize),
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when it exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Whether it dumped core.
    #[serde(default)]
    pub core_dumped: bool,
}

impl ExitStatus {
    /// The status a shell reports: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// The agent is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// The agent's version.
    pub version: String,
    /// The connection's protocol version.
    pub protocol: u32,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Seconds since the guest kernel started.
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// `agent` when the agent is the guest's init, `service` otherwise.
    pub init: String,
}

/// A request finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Tar entries unpacked or sent.
    #[serde(default)]
    pub entries: u64,
    /// Bytes of file contents unpacked or sent.
    #[serde(default)]
    pub bytes: u64,
}

/// A request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What failed and what to do, for the user.
    pub message: String,
}

/// Kinds of request failures, so callers can map them (a missing program is exit 127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The program, user, directory or path does not exist.
    NotFound,
    /// The program exists but cannot be executed.
    NotExecutable,
    /// The request is malformed or not understood by this agent.
    Invalid,
    /// A limit was reached (too many sessions) or the action is disabled.
    Refused,
    /// Anything else.
    Failed,
}

impl ErrorReply {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_json_shape() {
        let open = Open::Exec(Exec {
            command: Command::Argv(vec!["make".into(), "test".into()]),
            env: BTreeMap::from([("TERM".into(), "xterm".into())]),
            clear_env: false,
            cwd: Some("/root/repo".into()),
            user: Some(User::Name("dev".into())),
            pty: Some(WinSize { rows: 24, cols: 80 }),
        });
        let j = serde_json::to_string(&open).unwrap();
        assert_eq!(
            j,
            r#"{"type":"exec","command":{"argv":["make","test"]},"env":{"TERM":"xterm"},"clear_env":false,"cwd":"/root/repo","user":"dev","pty":{"rows":24,"cols":80}}"#
        );
        assert_eq!(serde_json::from_str::<Open>(&j).unwrap(), open);
        let min: Open =
            serde_json::from_str(r#"{"type":"exec","command":"login_shell","user":1000}"#).unwrap();
        assert!(matches!(
            min,
            Open::Exec(Exec {
                user: Some(User::Uid(1000)),
                ..
            })
        ));
        assert_eq!(
            serde_json::to_string(&Control::Exit(ExitStatus {
                code: None,
                signal: Some(2),
                core_dumped: false
            }))
            .unwrap(),
            r#"{"type":"exit","code":null,"signal":2,"core_dumped":false}"#
        );
        assert_eq!(
            serde_json::from_str::<Control>(r#"{"type":"resize","rows":50,"cols":132,"extra":1}"#)
                .unwrap(),
            Control::Resize(WinSize {
                rows: 50,
                cols: 132
            })
        );
        assert!(serde_json::from_str::<Control>(r#"{"type":"dance"}"#).is_err());
    }

    #[test]
    fn versions_negotiate_to_the_highest_common_one() {
        let mut a = Hello::new(Role::Client, "host");
        let mut b = Hello::new(Role::Server, "agent");
        assert_eq!(a.negotiate(&b), Ok(PROTOCOL_VERSION));
        (a.min_protocol, a.protocol) = (1, 3);
        (b.min_protocol, b.protocol) = (2, 2);
        assert_eq!(a.negotiate(&b), Ok(2));
        assert_eq!(b.negotiate(&a), Ok(2));
        (b.min_protocol, b.protocol) = (4, 5);
        let e = a.negotiate(&b).unwrap_err();
        assert!(e.to_string().contains("agent speaks 4..=5"), "{e}");
        b.role = Role::Client;
        assert_eq!(a.negotiate(&b), Err(VersionError::SameRole(Role::Client)));
    }

    #[test]
    fn shell_codes_follow_the_shell() {
        let s = |code, signal| ExitStatus {
            code,
            signal,
            core_dumped: false,
        };
        assert_eq!(s(Some(3), None).shell_code(), 3);
        assert_eq!(s(None, Some(9)).shell_code(), 137);
    }
}
