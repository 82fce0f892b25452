//! Running privileged operations inside the daemon itself, for when it is root.

use std::os::fd::OwnedFd;
use std::path::Path;

use banger_host::{LinkDns, Resolved};

use crate::{HelperError, PrivOp, Privileged};

/// Runs each [`PrivOp`] in the calling process through `banger-host`, after the same
/// validation the separate helper applies. The daemon uses it when it runs as root
/// (quick trials, CI), so both setups accept and refuse exactly the same requests.
/// The bridge and subnet come from the daemon's own config (the helper takes them
/// from its config file instead), and there is no record of taps: root may touch any.
#[derive(Debug, Default)]
pub struct InProcess {
    /// This host's systemd-resolved, when it runs one ([`InProcess::new`] looks;
    /// `default()` never touches resolved).
    resolved: Option<Resolved>,
    /// The bridge's resolved settings, applied once per bridge.
    link_dns: LinkDns,
}

impl InProcess {
    /// An executor that also gives banger's bridge per-link DNS in systemd-resolved,
    /// when this host runs it.
    pub fn new() -> Self {
        Self {
            resolved: Resolved::detect(Path::new(banger_host::RESOLVECTL)),
            link_dns: LinkDns::default(),
        }
    }
}

#[async_trait::async_trait]
impl Privileged for InProcess {
    async fn run(&self, op: PrivOp) -> Result<(), HelperError> {
        if let Err(e) = op.validate() {
            tracing::warn!(op = op.name(), request = ?op, error = %e, "refused privileged operation");
            return Err(e);
        }
        tracing::debug!(op = op.name(), request = ?op, "running privileged operation");
        self.execute(op).await
    }

    async fn open_tap(&self, name: &str) -> Result<OwnedFd, HelperError> {
        crate::validate::tap_name(name)?;
        Ok(banger_host::open_tap(name)?)
    }
}

impl InProcess {
    /// Carry out an already validated operation. Private so that `run`, which
    /// validates first, is the only way in.
    async fn execute(&self, op: PrivOp) -> Result<(), HelperError> {
        let nft = banger_host::default_nft();
        match op {
            PrivOp::EnsureBridge {
                name,
                gateway,
                prefix,
            } => {
                banger_host::ensure_bridge(&name, gateway, prefix).await?;
                self.link_dns
                    .ensure(self.resolved.as_ref(), &name, gateway)
                    .await?;
            }
            PrivOp::CreateTap {
                name,
                bridge,
                owner_uid,
            } => banger_host::create_tap(&name, &bridge, owner_uid).await?,
            PrivOp::DeleteTap { name } => {
                banger_host::delete_link(&name).await?;
                release_tap_rules(nft, &name).await;
            }
            PrivOp::EnableNat { bridge, subnet } => {
                banger_host::enable_nat(&bridge, subnet).await?
            }
            PrivOp::DisableNat { bridge: _ } => banger_host::disable_nat().await?,
            PrivOp::EnableIsolation {
                bridge,
                gateway,
                prefix: _,
                host_tcp_ports,
            } => banger_host::enable_guard(nft, &bridge, gateway, &host_tcp_ports).await?,
            PrivOp::DisableIsolation { bridge: _ } => banger_host::disable_guard(nft).await?,
            PrivOp::IsolateTap { name, ip } => {
                banger_host::isolate_tap(nft, &name, &banger_model::guest_mac(ip), ip).await?
            }
            PrivOp::DeleteBridge {
                name,
                gateway,
                prefix: _,
            } => {
                self.link_dns.revert(self.resolved.as_ref(), &name).await?;
                banger_host::delete_bridge(&name, gateway).await?;
            }
        }
        Ok(())
    }
}

/// Remove a deleted tap's isolation rules. Best effort: the tap is gone, so a chain
/// left behind (nft missing or failing) matches nothing, and the next `IsolateTap`
/// of that name replaces it.
pub(crate) async fn release_tap_rules(nft: &Path, tap: &str) {
    match banger_host::release_tap(nft, tap).await {
        Ok(()) => {}
        Err(banger_host::IsolationError::Nft(banger_host::NatError::NftMissing)) => {}
        Err(e) => tracing::warn!(tap, error = %e, "could not remove the tap's isolation rules"),
    }
}
