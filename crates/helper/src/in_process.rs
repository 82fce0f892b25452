//! Running privileged operations inside the daemon itself, for when it is root.

use std::os::fd::OwnedFd;

use crate::{HelperError, PrivOp, Privileged};

/// Runs each [`PrivOp`] in the calling process through `banger-host`, after the same
/// validation the separate helper applies. The daemon uses it when it runs as root
/// (quick trials, CI), so both setups accept and refuse exactly the same requests.
/// The bridge and subnet come from the daemon's own config (the helper takes them
/// from its config file instead), and there is no record of taps: root may touch any.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

#[async_trait::async_trait]
impl Privileged for InProcess {
    async fn run(&self, op: PrivOp) -> Result<(), HelperError> {
        if let Err(e) = op.validate() {
            tracing::warn!(op = op.name(), request = ?op, error = %e, "refused privileged operation");
            return Err(e);
        }
        tracing::debug!(op = op.name(), request = ?op, "running privileged operation");
        execute(op).await
    }

    async fn open_tap(&self, name: &str) -> Result<OwnedFd, HelperError> {
        crate::validate::tap_name(name)?;
        Ok(banger_host::open_tap(name)?)
    }
}

/// Carry out an already validated operation. Private so that `run`, which validates
/// first, is the only way in.
async fn execute(op: PrivOp) -> Result<(), HelperError> {
    match op {
        PrivOp::EnsureBridge {
            name,
            gateway,
            prefix,
        } => banger_host::ensure_bridge(&name, gateway, prefix).await?,
        PrivOp::CreateTap {
            name,
            bridge,
            owner_uid,
        } => banger_host::create_tap(&name, &bridge, owner_uid).await?,
        PrivOp::DeleteTap { name } => banger_host::delete_link(&name).await?,
        PrivOp::EnableNat { bridge, subnet } => banger_host::enable_nat(&bridge, subnet).await?,
        PrivOp::DisableNat { bridge: _ } => banger_host::disable_nat().await?,
    }
    Ok(())
}
