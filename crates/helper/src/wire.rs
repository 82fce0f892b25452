//! The helper's wire format: one JSON request per line, one JSON reply per line.
//!
//! Requests are internally tagged by `op` (`{"op":"create_tap","name":"bgr1",...}`):
//! the [`PrivOp`]s, which both the helper and the in-process mode run, plus the
//! [`HelperOp`]s only the helper has (its records, fd passing, the jailer). Replies
//! carry `ok`, the helper's version, and either an error (`kind` + `message`) or the
//! operation's result. A reply that says `"fd": true` arrives with exactly one file
//! descriptor attached (SCM_RIGHTS) to the same `sendmsg`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use banger_vmm::MachineSpec;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::jail::JailLaunched;
use crate::records::TapRecord;
use crate::{HelperError, PrivOp};

/// The longest request line the helper reads; longer ones are refused and the
/// connection closed. Requests are a few hundred bytes.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// The longest reply line a client reads.
pub const MAX_REPLY_LINE: usize = 1024 * 1024;
/// This build's version, sent in every reply (doctor shows it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Operations only the root helper offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum HelperOp {
    /// Is the helper there, and which version is it? (A struct variant, like every
    /// other, so that unknown fields are refused.)
    Ping {},
    /// The taps the helper made for the caller (all of them for root).
    ListTaps {},
    /// Open the caller's tap and pass its file descriptor back (SCM_RIGHTS), for a
    /// VMM that cannot open `/dev/net/tun` itself (`-netdev tap,fd=N`).
    OpenTap {
        /// A tap the helper made for the caller.
        name: String,
    },
    /// Start Firecracker for this machine through its jailer: chroot under the
    /// helper's jail root, the owner's uid/gid, a cgroup. Only `id`, `cpus`,
    /// `memory_mib`, `kernel`, `initrd`, `disks` and `net.tap` are used; the daemon
    /// sends the configuration (command line, MAC) through Firecracker's API itself.
    LaunchJailed {
        /// The machine, with host paths below the owner's state directory (boxed:
        /// it is by far the largest request).
        spec: Box<MachineSpec>,
    },
    /// Remove a stopped jailed guest's chroot and cgroup.
    CleanupJail {
        /// The VM id (as in `MachineSpec::id`).
        vm_id: String,
    },
    /// Bind the guests' DNS socket on the configured gateway, port 53 (privileged),
    /// and pass its descriptor back (SCM_RIGHTS), listening when TCP.
    BindDns {
        /// The gateway (must be the configured one).
        gateway: std::net::Ipv4Addr,
        /// UDP or TCP.
        proto: banger_host::DnsProto,
    },
}

impl HelperOp {
    /// The `op` tags of [`HelperOp`], so a request can be routed before parsing.
    pub const NAMES: [&'static str; 6] = [
        "ping",
        "list_taps",
        "open_tap",
        "launch_jailed",
        "cleanup_jail",
        "bind_dns",
    ];

    /// Short name, as on the wire; for logs.
    pub fn name(&self) -> &'static str {
        match self {
            HelperOp::Ping {} => "ping",
            HelperOp::ListTaps {} => "list_taps",
            HelperOp::OpenTap { .. } => "open_tap",
            HelperOp::LaunchJailed { .. } => "launch_jailed",
            HelperOp::CleanupJail { .. } => "cleanup_jail",
            HelperOp::BindDns { .. } => "bind_dns",
        }
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A privileged operation.
    Priv(PrivOp),
    /// A helper-only operation.
    Helper(HelperOp),
}

impl Request {
    /// Parse one line (without its newline). Unknown operations and unknown fields
    /// are refused.
    pub fn parse(line: &str) -> Result<Request, HelperError> {
        let bad = |e: serde_json::Error| HelperError::BadRequest(e.to_string());
        let value: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
        let op = value
            .get("op")
            .and_then(|o| o.as_str())
            .ok_or_else(|| HelperError::BadRequest("no \"op\" string in the request".into()))?;
        if HelperOp::NAMES.contains(&op) {
            serde_json::from_value(value)
                .map(Request::Helper)
                .map_err(bad)
        } else {
            serde_json::from_value(value)
                .map(Request::Priv)
                .map_err(bad)
        }
    }

    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        let json = match self {
            Request::Priv(op) => serde_json::to_string(op),
            Request::Helper(op) => serde_json::to_string(op),
        };
        // Serialising these plain enums cannot fail.
        json.unwrap_or_default() + "\n"
    }

    /// Short name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Priv(op) => op.name(),
            Request::Helper(op) => op.name(),
        }
    }
}

/// An error as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// [`HelperError::kind`].
    pub kind: String,
    /// The error's message, which says what to do.
    pub message: String,
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the operation succeeded.
    pub ok: bool,
    /// The helper's version.
    pub version: String,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    /// A file descriptor is attached to this reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fd: bool,
    /// `list_taps`: the taps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taps: Option<Vec<TapRecord>>,
    /// `launch_jailed`: where the guest runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<JailLaunched>,
    /// `ping`: the bridge and subnet the helper serves (from its config), so the
    /// daemon uses the same ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// The guests' network as the helper's config defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The guests' bridge.
    pub bridge: String,
    /// The guest subnet (the bridge has its first address).
    pub subnet: banger_model::Subnet,
}

impl Reply {
    /// Success without a result.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            version: VERSION.into(),
            ..Reply::default()
        }
    }

    /// Failure.
    pub fn err(e: &HelperError) -> Reply {
        Reply {
            ok: false,
            version: VERSION.into(),
            error: Some(WireError {
                kind: e.kind().to_string(),
                message: e.to_string(),
            }),
            ..Reply::default()
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }

    /// Turn a failed reply into the caller's error.
    pub fn into_result(self) -> Result<Reply, HelperError> {
        if self.ok {
            return Ok(self);
        }
        let e = self.error.unwrap_or(WireError {
            kind: "unknown".into(),
            message: "the helper refused the request without saying why".into(),
        });
        Err(HelperError::Remote {
            kind: e.kind,
            message: e.message,
        })
    }
}

/// One `sendmsg` of `bytes` with `fd` attached (when given). Returns the bytes sent;
/// the caller writes any rest without the descriptor.
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| vec![ControlMessage::ScmRights(r)])
        .unwrap_or_default();
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(std::io::Error::from)
}

/// One `recvmsg` into `buf`: the bytes read and any descriptors that came with them
/// (close-on-exec). At most 4 descriptors are accepted; a truncated control message
/// is an error.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = vec![];
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: the kernel just installed `r` in our table for us; nobody
                // else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ops_by_name_and_refuses_unknowns() {
        let r = Request::parse(r#"{"op":"delete_tap","name":"bgr1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Priv(PrivOp::DeleteTap {
                name: "bgr1".into()
            })
        );
        let r =
            Request::parse(r#"{"op":"bind_dns","gateway":"172.30.0.1","proto":"tcp"}"#).unwrap();
        assert_eq!(
            r,
            Request::Helper(HelperOp::BindDns {
                gateway: [172, 30, 0, 1].into(),
                proto: banger_host::DnsProto::Tcp
            })
        );
        let r = Request::parse(r#"{"op":"open_tap","name":"bgr1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Helper(HelperOp::OpenTap {
                name: "bgr1".into()
            })
        );
        assert_eq!(
            Request::parse(r#"{"op":"ping"}"#).unwrap(),
            Request::Helper(HelperOp::Ping {})
        );
        for bad in [
            "",
            "garbage",
            "{}",
            r#"{"op":3}"#,
            r#"{"op":"run_shell","cmd":"id"}"#,
            r#"{"op":"open_tap","name":"bgr1","owner":0}"#,
            r#"{"op":"ping","x":1}"#,
            r#"{"op":"bind_dns","gateway":"172.30.0.1","proto":"sctp"}"#,
            r#"{"op":"bind_dns","gateway":"172.30.0.1","proto":"udp","port":22}"#,
            r#"[1,2]"#,
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(matches!(e, HelperError::BadRequest(_)), "{bad}: {e}");
        }
        for r in [
            Request::Helper(HelperOp::CleanupJail { vm_id: "ab".into() }),
            Request::Priv(PrivOp::DisableNat {
                bridge: "banger0".into(),
            }),
        ] {
            let line = r.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::parse(line.trim_end()).unwrap(), r);
        }
    }

    #[test]
    fn replies_carry_kind_and_message() {
        let r = Reply::err(&HelperError::NotOurLink("bgr1".into()));
        let back: Reply = serde_json::from_str(r.to_line().trim_end()).unwrap();
        assert!(!back.ok);
        let e = back.into_result().unwrap_err();
        assert_eq!(e.kind(), "not_our_link");
        assert!(e.to_string().contains("not created by the banger helper"));
        let ok = Reply::ok().to_line();
        assert_eq!(ok, format!("{{\"ok\":true,\"version\":\"{VERSION}\"}}\n"));
    }

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsFd;
        let n = send_with_fd(a.as_fd(), b"hello\n", Some(file.as_fd())).unwrap();
        assert_eq!(n, 6);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptors are CLOEXEC"
        );
    }
}
