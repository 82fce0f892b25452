//! Talking to a booted guest, behind a small trait: waiting until it is ready, opening
//! sessions on it (execs, file transfers), asking it to power off, asking what it
//! listens on.
//!
//! The VM services only see [`Guest`]. [`AgentGuest`] holds one [`AgentClient`] per
//! running VM: QEMU's virtio-serial chardev serves one host connection at a time, so
//! every request for a VM (readiness, ports, shutdown, and the CLI's relayed execs)
//! shares that client's multiplexed connection. The client is made on first use from
//! the VM's handles (so after a daemon restart a re-adopted VM gets a new one), and
//! forgotten when the VM stops. Unit tests use a fake.

use banger_channel::tokio::Session;
use banger_channel::Open;
use banger_guest::agent::{AgentError, Channel};
use banger_guest::client::{AgentClient, ClientError, Endpoint};
use banger_vmm::Handles;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one agent request (shutdown, ports) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a session may take (connecting included).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the guest did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The agent channel failed, or the agent answered with an error.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An agent older than the channel failed (readiness, ports and shutdown only).
    #[error(transparent)]
    Legacy(#[from] AgentError),
    /// The VMM exited while we waited.
    #[error("the VM exited during boot")]
    VmmExited,
    /// The boot deadline passed.
    #[error("timed out")]
    Timeout,
    /// The guest kernel never ran banger's init ([`super::stall`]).
    #[error("the guest kernel stalled before running banger's init")]
    Stalled,
    /// Any other failure (other transports, test fakes).
    #[error("{0}")]
    Other(String),
}

/// Which guest.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The VM's id (one agent client per id).
    pub id: &'a str,
    /// The VM's name (for messages).
    pub name: &'a str,
    /// The VMM's handles (backend and agent socket).
    pub handles: &'a Handles,
}

/// What the VM services ask of a guest.
#[async_trait::async_trait]
pub trait Guest: Send + Sync {
    /// Wait until the guest agent answers (at most `timeout`).
    async fn agent_ready(&self, target: Target<'_>, timeout: Duration) -> Result<(), GuestError>;
    /// Ask the guest to flush its disks and power off; returns once asked (the caller
    /// waits for the VMM to exit).
    async fn shutdown(&self, target: Target<'_>) -> Result<(), GuestError>;
    /// TCP ports listening in the guest, sorted.
    async fn ports(&self, target: Target<'_>) -> Result<Vec<u16>, GuestError>;
    /// Open a session for `request` on the guest's agent (its answers, `started`
    /// first, come on the session).
    async fn open(&self, target: Target<'_>, request: &Open) -> Result<Session, GuestError>;
    /// The guest's ssh host public key (the text of its
    /// `/etc/ssh/ssh_host_ed25519_key.pub`, at most [`MAX_HOST_KEY`] bytes), as its
    /// agent reads it: a channel no other guest can reach, unlike the network.
    async fn host_key(&self, target: Target<'_>) -> Result<String, GuestError>;
    /// A guest restored from a warm snapshot takes its own identity (before anything
    /// else runs in it).
    async fn identity(
        &self,
        target: Target<'_>,
        identity: &banger_channel::Identity,
    ) -> Result<(), GuestError> {
        let _ = (target, identity);
        Err(GuestError::Other(
            "this guest cannot take a new identity".into(),
        ))
    }
    /// The VM stopped: drop its agent connection.
    fn forget(&self, id: &str);
}

/// The most of a public key file read from a guest (a real one is under 1 KiB).
pub const MAX_HOST_KEY: u64 = 8 << 10;

/// One held client and the VMM it belongs to.
struct Held {
    client: Arc<AgentClient>,
    pid: u32,
}

/// The guest agent over the VMM's channel, one client per running VM.
#[derive(Default)]
pub struct AgentGuest {
    clients: Mutex<HashMap<String, Held>>,
}

impl AgentGuest {
    /// No clients yet; each VM gets its own on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client for `t`, made if there is none or it belongs to an earlier VMM of
    /// that VM (a restart).
    fn client(&self, t: Target<'_>) -> Arc<AgentClient> {
        let endpoint = Endpoint::for_backend(&t.handles.backend, &t.handles.agent_socket);
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = m.get(t.id) {
            if h.pid == t.handles.pid && h.client.endpoint() == &endpoint {
                return h.client.clone();
            }
        }
        let client = Arc::new(AgentClient::new(endpoint));
        m.insert(
            t.id.to_string(),
            Held {
                client: client.clone(),
                pid: t.handles.pid,
            },
        );
        client
    }
}

fn channel(h: &Handles) -> Channel<'_> {
    Channel::for_backend(&h.backend, &h.agent_socket)
}

#[async_trait::async_trait]
impl Guest for AgentGuest {
    async fn agent_ready(&self, t: Target<'_>, timeout: Duration) -> Result<(), GuestError> {
        let started = std::time::Instant::now();
        match self.client(t).wait_ready(timeout).await {
            Ok(pong) => {
                tracing::info!(vm = %t.name, agent = %pong.version, init = %pong.init, "guest agent answered");
                Ok(())
            }
            Err(ClientError::Legacy) => {
                // An image made before the channel: its agent speaks the old protocol,
                // which still answers readiness, ports and shutdown.
                tracing::warn!(vm = %t.name, "the guest's agent predates the exec channel; rebuild the image to run commands through it");
                let left = timeout.saturating_sub(started.elapsed());
                banger_guest::agent::wait_ready_on(channel(t.handles), left).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn shutdown(&self, t: Target<'_>) -> Result<(), GuestError> {
        let client = self.client(t);
        match tokio::time::timeout(REQUEST_TIMEOUT, client.shutdown()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ClientError::Legacy)) => {
                banger_guest::agent::request_on(channel(t.handles), "shutdown", REQUEST_TIMEOUT)
                    .await?;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ClientError::Timeout(REQUEST_TIMEOUT).into()),
        }
    }

    async fn ports(&self, t: Target<'_>) -> Result<Vec<u16>, GuestError> {
        let client = self.client(t);
        let mut ports = match tokio::time::timeout(REQUEST_TIMEOUT, client.ports()).await {
            Ok(Ok(p)) => p,
            Ok(Err(ClientError::Legacy)) => {
                let v =
                    banger_guest::agent::request_on(channel(t.handles), "ports", REQUEST_TIMEOUT)
                        .await?;
                v["ports"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(ClientError::Timeout(REQUEST_TIMEOUT).into()),
        };
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    async fn open(&self, t: Target<'_>, request: &Open) -> Result<Session, GuestError> {
        let client = self.client(t);
        match tokio::time::timeout(OPEN_TIMEOUT, client.open(request)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ClientError::Timeout(OPEN_TIMEOUT).into()),
        }
    }

    async fn host_key(&self, t: Target<'_>) -> Result<String, GuestError> {
        use tokio::io::AsyncReadExt;
        let path = format!("/{}.pub", banger_contract::ssh::HOST_KEY);
        let client = self.client(t);
        let read = async {
            let s = client
                .exec(banger_guest::client::argv(["cat", path.as_str()]))
                .await?;
            let mut text = Vec::new();
            let mut out = s.stdout().take(MAX_HOST_KEY + 1);
            let got = out.read_to_end(&mut text).await;
            if got.is_err() || text.len() as u64 > MAX_HOST_KEY {
                s.close();
                return Err(GuestError::Other(format!(
                    "the guest's {path} could not be read (or is over {MAX_HOST_KEY} bytes)"
                )));
            }
            let status = s.wait().await?;
            if status.code != Some(0) {
                return Err(GuestError::Other(format!(
                    "the guest has no {path} (no sshd, or its key was never made)"
                )));
            }
            Ok(String::from_utf8_lossy(&text).into_owned())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(REQUEST_TIMEOUT).into()),
        }
    }

    async fn identity(
        &self,
        t: Target<'_>,
        identity: &banger_channel::Identity,
    ) -> Result<(), GuestError> {
        let client = self.client(t);
        match tokio::time::timeout(OPEN_TIMEOUT, client.identity(identity)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ClientError::Timeout(OPEN_TIMEOUT).into()),
        }
    }

    fn forget(&self, id: &str) {
        let held = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(h) = held {
            // Closing sends a goaway; nothing to wait for.
            tokio::spawn(async move { h.client.disconnect().await });
        }
    }
}
