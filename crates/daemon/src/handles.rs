//! `handles.json`: what is true about a running VM right now (VMM pid, sockets, tap).
//! Written before the in-memory view changes, so a daemon killed at any point can
//! rediscover its guests on the next start.

use banger_vmm::Handles;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The transient facts about one VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmHandles {
    /// The VMM's handles.
    pub vmm: Handles,
    /// The host tap device.
    pub tap: String,
}

/// File name inside the VM's state directory.
pub const FILE: &str = "handles.json";

/// Path of the handles file for a VM directory.
pub fn path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(FILE)
}

/// Write atomically (temp file + rename), so a crash never leaves half a file.
pub fn write(vm_dir: &Path, h: &VmHandles) -> std::io::Result<()> {
    let tmp = vm_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(h).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path(vm_dir))
}

/// Read, if present and well-formed.
pub fn read(vm_dir: &Path) -> Option<VmHandles> {
    let bytes = std::fs::read(path(vm_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Remove (absent is fine).
pub fn remove(vm_dir: &Path) {
    let _ = std::fs::remove_file(path(vm_dir));
}
