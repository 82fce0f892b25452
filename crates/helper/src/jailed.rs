//! [`JailedFirecracker`]: the owner daemon's Firecracker backend when a root helper
//! runs. The owner cannot chroot, create device nodes or change uid, so it asks the
//! helper to start each guest through Firecracker's jailer (`launch_jailed`, see
//! [`crate::jail`]) and then does what it does for an unjailed guest: configure the
//! machine over the API socket (which lies in the chroot and belongs to the owner)
//! with the chroot-relative paths the helper returns, and start it. Stopping needs no
//! privilege (Firecracker runs as the owner); removing the jail does, so cleanup goes
//! back to the helper.

use std::path::Path;

use banger_vmm::firecracker::client::ApiClient;
use banger_vmm::firecracker::{Firecracker, FirecrackerError};
use banger_vmm::{Accel, Handles, MachineSpec, Vmm, VmmError};

use crate::wire::{HelperOp, Request};
use crate::HelperClient;

/// Firecracker guests launched by the root helper through the jailer.
#[derive(Debug, Clone)]
pub struct JailedFirecracker {
    /// The helper that launches and cleans up jails.
    pub helper: HelperClient,
    /// Builds the API requests and stops guests, exactly as for an unjailed guest.
    pub firecracker: Firecracker,
}

impl JailedFirecracker {
    /// A jailed backend through `helper`.
    pub fn new(helper: HelperClient) -> JailedFirecracker {
        JailedFirecracker {
            helper,
            firecracker: Firecracker::default(),
        }
    }
}

fn launch_error(e: impl std::fmt::Display) -> VmmError {
    VmmError::Launch(e.to_string())
}

#[async_trait::async_trait]
impl Vmm for JailedFirecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError> {
        // Refuse what Firecracker would refuse before the helper builds a jail.
        self.firecracker
            .configure_requests(spec)
            .map_err(VmmError::from)?;
        let j = self
            .helper
            .launch_jailed(spec)
            .await
            .map_err(launch_error)?;
        let handles = Handles {
            backend: "firecracker".into(),
            pid: j.pid,
            start_time: banger_vmm::process::start_time(j.pid),
            tag: Some(j.jail_id.clone()),
            control_socket: j.api_socket.clone(),
            agent_socket: j.vsock_socket.clone(),
            console_log: j.console_log.clone(),
            accel: Accel::Kvm,
        };
        let configured = async {
            let requests = self.firecracker.configure_requests(&j.spec)?;
            let client = ApiClient::new(&j.api_socket)?;
            for r in &requests {
                client.send(r).await?;
            }
            client.send(&Firecracker::start_request()?).await?;
            Ok::<(), FirecrackerError>(())
        }
        .await;
        if let Err(e) = configured {
            // Nothing may stay behind: the process, then its jail.
            let _ = self.firecracker.stop(&handles).await;
            if let Err(c) = self.helper.cleanup_jail(&spec.id).await {
                tracing::warn!(vm = %spec.id, error = %c, "removing the jail of a failed launch");
            }
            return Err(e.into());
        }
        tracing::info!(pid = j.pid, jail = %j.jail_id, "jailed firecracker guest started");
        Ok(handles)
    }

    async fn kill(&self, h: &Handles) -> Result<(), VmmError> {
        Ok(self.firecracker.stop(h).await?)
    }

    fn is_alive(&self, h: &Handles, _vm_id: &str) -> bool {
        h.vmm_alive()
    }

    /// The jail (chroot with the guest's sockets, hard links of its disks) is the
    /// helper's to remove. `runtime_dir` is the VM's runtime directory, named after
    /// the VM id; a VM that never had a jail is fine. Blocking, like every `cleanup`:
    /// one short request on a local socket.
    fn cleanup(&self, runtime_dir: &Path) {
        let Some(vm_id) = runtime_dir.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let req = Request::Helper(HelperOp::CleanupJail {
            vm_id: vm_id.to_string(),
        });
        if let Err(e) = self.helper.call_blocking(&req) {
            tracing::warn!(vm = vm_id, error = %e, "the helper could not remove the VM's jail");
        }
    }
}
