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

/// Largest handles file read back (a real one is well under 1 KiB).
const MAX_BYTES: u64 = 64 << 10;

/// Write durably (temp file, fsync, rename, directory fsync): a crash at any point
/// leaves the previous file or this one, never a torn or empty file that would
/// lose track of a running VMM.
pub fn write(vm_dir: &Path, h: &VmHandles) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(h).map_err(std::io::Error::other)?;
    banger_image::durable::write_file(&path(vm_dir), &bytes)
}

/// Read, if present and well-formed. A damaged file reads as absent: the VM's
/// teardown then finds its VMM by the runtime directory instead (see
/// `vm::stop::teardown_runtime`).
pub fn read(vm_dir: &Path) -> Option<VmHandles> {
    use std::io::Read;
    let f = std::fs::File::open(path(vm_dir)).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Remove (absent is fine), with any temporary a crashed write left.
pub fn remove(vm_dir: &Path) {
    let _ = std::fs::remove_file(path(vm_dir));
    let _ = std::fs::remove_file(vm_dir.join(format!(".{FILE}.tmp")));
}
