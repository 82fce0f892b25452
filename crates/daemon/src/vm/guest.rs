//! Talking to a booted guest, behind a small trait: waiting until it is ready,
//! asking it to power off, asking what it listens on.
//!
//! The VM services only see [`Guest`]. [`AgentGuest`] is today's implementation (the
//! agent's JSON-line channel over virtio-serial or Firecracker's vsock, then a TCP
//! connect to sshd); the exec-protocol client plugs in here without touching the
//! start and stop machinery, and unit tests use a fake.

use banger_guest::agent::{AgentError, Channel};
use banger_vmm::Handles;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one agent request (shutdown, ports) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the ssh `poweroff` fallback may take.
const SSH_POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the guest did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The agent channel failed, or the agent answered with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// sshd did not answer.
    #[error("{0}")]
    Ssh(#[source] std::io::Error),
    /// The VMM exited while we waited.
    #[error("the VM exited during boot")]
    VmmExited,
    /// The boot deadline passed.
    #[error("timed out")]
    Timeout,
    /// Any other failure (other transports, test fakes).
    #[error("{0}")]
    Other(String),
}

/// Which guest, and how to reach it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The VMM's handles (backend and agent socket).
    pub handles: &'a Handles,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The VM's name (ssh host alias).
    pub name: &'a str,
    /// The known_hosts file pinning its host key.
    pub known_hosts: &'a Path,
}

/// What the VM services ask of a guest.
#[async_trait::async_trait]
pub trait Guest: Send + Sync {
    /// Wait until the guest agent answers (at most `timeout`).
    async fn agent_ready(&self, handles: &Handles, timeout: Duration) -> Result<(), GuestError>;
    /// Wait until sshd in the guest accepts connections (at most `timeout`).
    async fn ssh_ready(&self, ip: Ipv4Addr, timeout: Duration) -> Result<(), GuestError>;
    /// Ask the guest to flush its disks and power off; returns once asked (the caller
    /// waits for the VMM to exit).
    async fn shutdown(&self, target: Target<'_>) -> Result<(), GuestError>;
    /// TCP ports listening in the guest, sorted.
    async fn ports(&self, handles: &Handles) -> Result<Vec<u16>, GuestError>;
}

/// How much of the ssh fallback's stderr is kept for the log. Its stdout is the
/// guest's to fill, so it is never read at all.
const SSH_STDERR_KEPT: u64 = 4 << 10;

/// The guest agent over the VMM's channel, and OpenSSH as the fallback.
pub struct AgentGuest {
    ssh_key: PathBuf,
}

impl AgentGuest {
    /// Using banger's private key at `ssh_key` for the ssh fallback.
    pub fn new(ssh_key: PathBuf) -> Self {
        Self { ssh_key }
    }

    /// `sync; poweroff` over ssh, bounded in time and in what is read from it: the
    /// guest decides what the remote command prints, so stdout goes to /dev/null and
    /// only the first few KiB of stderr are kept (the rest is drained unread).
    async fn ssh_poweroff(&self, t: Target<'_>) -> Result<(), GuestError> {
        use tokio::io::AsyncReadExt;
        let mut c = tokio::process::Command::new("ssh");
        c.args(banger_guest::ssh::ssh_options(
            &self.ssh_key,
            t.known_hosts,
            &format!("banger-{}", t.name),
        ))
        .arg(format!("root@{}", t.ip))
        .arg("sync; systemctl poweroff --no-block || poweroff")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let run = async {
            let mut child = c.spawn()?;
            let mut head = Vec::new();
            if let Some(mut err) = child.stderr.take() {
                (&mut err)
                    .take(SSH_STDERR_KEPT)
                    .read_to_end(&mut head)
                    .await?;
                tokio::io::copy(&mut err, &mut tokio::io::sink()).await?;
            }
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, head))
        };
        match tokio::time::timeout(SSH_POWEROFF_TIMEOUT, run).await {
            Ok(Ok((status, head))) => {
                if !status.success() {
                    tracing::warn!(vm = %t.name, %status, stderr = %String::from_utf8_lossy(&head).trim(), "ssh poweroff fallback failed");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(GuestError::Ssh(e)),
            Err(_) => Err(GuestError::Timeout),
        }
    }
}

fn channel(h: &Handles) -> Channel<'_> {
    Channel::for_backend(&h.backend, &h.agent_socket)
}

#[async_trait::async_trait]
impl Guest for AgentGuest {
    async fn agent_ready(&self, h: &Handles, timeout: Duration) -> Result<(), GuestError> {
        banger_guest::agent::wait_ready_on(channel(h), timeout).await?;
        Ok(())
    }

    async fn ssh_ready(&self, ip: Ipv4Addr, timeout: Duration) -> Result<(), GuestError> {
        banger_guest::ssh::wait_sshd(ip, timeout)
            .await
            .map_err(GuestError::Ssh)
    }

    async fn shutdown(&self, t: Target<'_>) -> Result<(), GuestError> {
        let asked =
            banger_guest::agent::request_on(channel(t.handles), "shutdown", REQUEST_TIMEOUT).await;
        if let Err(e) = asked {
            tracing::warn!(vm = %t.name, error = %e, "agent shutdown failed; asking over ssh");
            return self.ssh_poweroff(t).await;
        }
        Ok(())
    }

    async fn ports(&self, h: &Handles) -> Result<Vec<u16>, GuestError> {
        let v = banger_guest::agent::request_on(channel(h), "ports", REQUEST_TIMEOUT).await?;
        let mut ports: Vec<u16> = v["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                    .collect()
            })
            .unwrap_or_default();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }
}
