//! [`HelperClient`]: the owner daemon's side of the root helper's socket.
//!
//! One connection per call (the helper may restart between two calls, and a call
//! is rare: a tap per VM start), made on a blocking thread so the descriptor of
//! `open_tap` can be received with `recvmsg`. Every read and write is bounded in time
//! and size.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_vmm::MachineSpec;

use crate::jail::JailLaunched;
use crate::records::TapRecord;
use crate::wire::{recv_with_fds, HelperOp, Reply, Request, MAX_REPLY_LINE};
use crate::{HelperError, PrivOp, Privileged};

/// The environment variable through which `banger system run` (and the system unit)
/// tells the owner daemon where the helper listens. When it is set, the daemon must
/// use [`HelperClient`] for every privileged operation; when it is not, a root daemon
/// runs them in-process and a non-root one cannot run them at all.
pub const HELPER_SOCKET_ENV: &str = "BANGER_HELPER_SOCKET";

/// How long one call may take; a jailed launch waits for Firecracker's API socket.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Privileged operations through the root helper's socket.
#[derive(Debug, Clone)]
pub struct HelperClient {
    socket: PathBuf,
    timeout: Duration,
}

impl HelperClient {
    /// A client of the helper listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> HelperClient {
        HelperClient {
            socket: socket.into(),
            timeout: CALL_TIMEOUT,
        }
    }

    /// The client `BANGER_HELPER_SOCKET` names, if it is set.
    pub fn from_env() -> Option<HelperClient> {
        std::env::var_os(HELPER_SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map(HelperClient::new)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The helper's version (and that it answers).
    pub async fn ping(&self) -> Result<String, HelperError> {
        let (reply, _) = self.call(Request::Helper(HelperOp::Ping {})).await?;
        Ok(reply.version)
    }

    /// The bridge and subnet the helper serves (its config's): the daemon must use
    /// these, since the helper refuses any other.
    pub async fn network(&self) -> Result<crate::wire::Network, HelperError> {
        let (reply, _) = self.call(Request::Helper(HelperOp::Ping {})).await?;
        reply
            .network
            .ok_or_else(|| HelperError::Protocol("ping reply without the network".into()))
    }

    /// The caller's taps, as the helper recorded them.
    pub async fn list_taps(&self) -> Result<Vec<TapRecord>, HelperError> {
        let (reply, _) = self.call(Request::Helper(HelperOp::ListTaps {})).await?;
        Ok(reply.taps.unwrap_or_default())
    }

    /// Start `spec` through Firecracker's jailer (see [`crate::jail`]).
    pub async fn launch_jailed(&self, spec: &MachineSpec) -> Result<JailLaunched, HelperError> {
        let (reply, _) = self
            .call(Request::Helper(HelperOp::LaunchJailed {
                spec: Box::new(spec.clone()),
            }))
            .await?;
        reply
            .jail
            .ok_or_else(|| HelperError::Protocol("launch_jailed reply without a jail".into()))
    }

    /// Remove a stopped jailed guest's chroot and cgroups.
    pub async fn cleanup_jail(&self, vm_id: &str) -> Result<(), HelperError> {
        self.call(Request::Helper(HelperOp::CleanupJail {
            vm_id: vm_id.to_string(),
        }))
        .await
        .map(drop)
    }

    /// Send one request and read its reply (and descriptors), on a blocking thread.
    pub async fn call(&self, req: Request) -> Result<(Reply, Vec<OwnedFd>), HelperError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call_blocking(&req))
            .await
            .map_err(|e| HelperError::Protocol(format!("the helper call task failed: {e}")))?
    }

    /// [`HelperClient::call`] without a runtime.
    pub fn call_blocking(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>), HelperError> {
        let unreachable = |source| HelperError::Unreachable {
            socket: self.socket.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(unreachable)?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        s.set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        // A helper that refuses the caller replies and closes at once, possibly before
        // the request is written: read its reply whatever the write says.
        let written = s.write_all(req.to_line().as_bytes());
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let (n, mut got) = match recv_with_fds(s.as_fd(), &mut chunk) {
                Ok(r) => r,
                Err(e) => return Err(unreachable(written.err().unwrap_or(e))),
            };
            fds.append(&mut got);
            if n == 0 {
                if let Err(e) = written {
                    return Err(unreachable(e));
                }
                return Err(HelperError::Protocol(
                    "the helper closed the connection without a reply".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                buf.truncate(end);
                break;
            }
            if buf.len() > MAX_REPLY_LINE {
                return Err(HelperError::Protocol(format!(
                    "a reply longer than {MAX_REPLY_LINE} bytes"
                )));
            }
        }
        let reply: Reply =
            serde_json::from_slice(&buf).map_err(|e| HelperError::Protocol(format!("{e}")))?;
        let reply = reply.into_result()?;
        if reply.fd && fds.len() != 1 {
            return Err(HelperError::Protocol(format!(
                "the reply should carry one descriptor, it carried {}",
                fds.len()
            )));
        }
        if !reply.fd {
            fds.clear();
        }
        Ok((reply, fds))
    }
}

#[async_trait::async_trait]
impl Privileged for HelperClient {
    async fn run(&self, op: PrivOp) -> Result<(), HelperError> {
        // Validate here too: a malformed request never leaves the daemon.
        op.validate()?;
        self.call(Request::Priv(op)).await.map(drop)
    }

    async fn open_tap(&self, name: &str) -> Result<OwnedFd, HelperError> {
        crate::validate::tap_name(name)?;
        let (_, mut fds) = self
            .call(Request::Helper(HelperOp::OpenTap {
                name: name.to_string(),
            }))
            .await?;
        fds.pop()
            .ok_or_else(|| HelperError::Protocol("open_tap reply without a descriptor".into()))
    }

    async fn bind_dns(
        &self,
        gateway: std::net::Ipv4Addr,
        proto: crate::DnsProto,
    ) -> Result<OwnedFd, HelperError> {
        let (_, mut fds) = self
            .call(Request::Helper(HelperOp::BindDns { gateway, proto }))
            .await?;
        fds.pop()
            .ok_or_else(|| HelperError::Protocol("bind_dns reply without a descriptor".into()))
    }

    /// The taps recorded for this process's uid. The helper answers root with every
    /// tap, so a root caller filters: another daemon's taps are never its to reclaim.
    async fn list_tap_names(&self) -> Result<Vec<String>, HelperError> {
        let me = nix::unistd::geteuid().as_raw();
        Ok(HelperClient::list_taps(self)
            .await?
            .into_iter()
            .filter(|t| t.owner_uid == me)
            .map(|t| t.name)
            .collect())
    }
}
