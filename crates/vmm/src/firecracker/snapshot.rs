//! `PATCH /vm`, `PUT /snapshot/create`, `PUT /snapshot/load`: warm snapshots.
//!
//! A Firecracker snapshot is two files: the microVM state (`snapshot_path`) and the
//! guest memory (`mem_file_path`). Creating one needs the VM paused; loading one is
//! only accepted by a fresh process (after the logger and metrics, before anything
//! else), and the loaded VM stays paused until `PATCH /vm {"state": "Resumed"}`
//! unless `resume_vm` says otherwise. The snapshot keeps the host paths of the
//! drives and the vsock socket it was made with: only the tap can be overridden at
//! load time (`network_overrides`), so restoring several copies at once takes a
//! jailer chroot per copy (see docs/warm.md).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Body of `PATCH /vm` (`Vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// The state to enter.
    pub state: VmState,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// vCPUs stopped (required before `snapshot/create`).
    Paused,
    /// vCPUs running again.
    Resumed,
}

/// Body of `PUT /snapshot/create` (`SnapshotCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Where the guest memory goes.
    pub mem_file_path: PathBuf,
    /// Where the microVM state goes.
    pub snapshot_path: PathBuf,
    /// Full or diff; omitted = full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// Every page of guest memory.
    Full,
    /// Only pages dirtied since the last snapshot (needs dirty page tracking).
    Diff,
}

/// Body of `PUT /snapshot/load` (`SnapshotLoadParams`). Exactly one of the memory
/// fields: banger sends `mem_backend` (`mem_file_path` is deprecated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// The microVM state to load.
    pub snapshot_path: PathBuf,
    /// Where the guest memory comes from.
    pub mem_backend: MemoryBackend,
    /// Dirty page tracking for later diff snapshots; omitted = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume at once after loading; omitted = stay paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// Taps to use instead of the ones the snapshot names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

/// `SnapshotLoadParams.mem_backend` (`MemoryBackend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// A file, or a userfaultfd handler's socket.
    pub backend_type: BackendType,
    /// The file or socket.
    pub backend_path: PathBuf,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendType {
    /// The memory file, mapped privately (copy on write).
    File,
    /// Page faults served by a process listening on a unix socket.
    Uffd,
}

/// `SnapshotLoadParams.network_overrides[]` (`NetworkOverride`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface, as configured when the snapshot was made.
    pub iface_id: String,
    /// The tap to use now.
    pub host_dev_name: String,
}

/// The memory file beside a snapshot's state file (`state.bin` → `state.mem`).
pub fn memory_file(state: &std::path::Path) -> PathBuf {
    state.with_extension("mem")
}

use super::client::{ApiClient, ApiRequest, Method};
use super::{Firecracker, FirecrackerError, IFACE_ID};
use crate::{Handles, MachineSpec, VmmError};
use std::time::Duration;

/// `PATCH path` with `body` as JSON.
fn patch(path: &str, body: &impl Serialize) -> Result<ApiRequest, FirecrackerError> {
    let mut r = ApiRequest::put(path, body)?;
    r.method = Method::Patch;
    Ok(r)
}

impl Firecracker {
    /// Pause the guest, then save it: state to `state`, memory beside it
    /// ([`memory_file`]). Pure: the contract tests check these bodies.
    pub fn snapshot_requests(state: &std::path::Path) -> Result<Vec<ApiRequest>, FirecrackerError> {
        Ok(vec![
            patch(
                "/vm",
                &Vm {
                    state: VmState::Paused,
                },
            )?,
            ApiRequest::put(
                "/snapshot/create",
                &SnapshotCreateParams {
                    mem_file_path: memory_file(state),
                    snapshot_path: state.to_path_buf(),
                    snapshot_type: Some(SnapshotType::Full),
                },
            )?,
        ])
    }

    /// What a fresh Firecracker is sent to load `spec.restore` instead of booting:
    /// logger (and metrics), then `snapshot/load` with the VM's own tap, staying
    /// paused until [`Firecracker::resume_request`].
    pub fn restore_requests(
        &self,
        spec: &MachineSpec,
        state: &std::path::Path,
    ) -> Result<Vec<ApiRequest>, FirecrackerError> {
        let rt = &spec.runtime_dir;
        let mut reqs = self.logging_requests(rt)?;
        reqs.push(ApiRequest::put(
            "/snapshot/load",
            &SnapshotLoadParams {
                snapshot_path: state.to_path_buf(),
                mem_backend: MemoryBackend {
                    backend_type: BackendType::File,
                    backend_path: memory_file(state),
                },
                track_dirty_pages: None,
                resume_vm: Some(false),
                network_overrides: spec
                    .net
                    .iter()
                    .map(|n| NetworkOverride {
                        iface_id: IFACE_ID.into(),
                        host_dev_name: n.tap.clone(),
                    })
                    .collect(),
            },
        )?);
        Ok(reqs)
    }

    /// `PATCH /vm {"state": "Resumed"}`.
    pub fn resume_request() -> Result<ApiRequest, FirecrackerError> {
        patch(
            "/vm",
            &Vm {
                state: VmState::Resumed,
            },
        )
    }

    /// Send `requests` on `h`'s API socket, each bounded by `timeout`.
    pub(crate) async fn send_all(
        h: &Handles,
        requests: &[ApiRequest],
        timeout: Duration,
    ) -> Result<(), VmmError> {
        let client = ApiClient::with_timeout(&h.control_socket, timeout)
            .map_err(|e| VmmError::Snapshot(e.to_string()))?;
        for r in requests {
            client
                .send(r)
                .await
                .map_err(|e| VmmError::Snapshot(format!("{r}: {e}")))?;
        }
        Ok(())
    }
}
