//! `PUT /drives/{drive_id}`: virtio-block disks.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Body of `PUT /drives/{drive_id}` (`Drive`, virtio-block flavour).
///
/// The vhost-user fields (`socket`) and rate limiters are never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Drive id; must equal the `{drive_id}` in the request path.
    pub drive_id: String,
    /// Host path of the raw disk image.
    pub path_on_host: PathBuf,
    /// Whether Firecracker should make this the kernel's root device (adds
    /// `root=/dev/vda` to the command line).
    pub is_root_device: bool,
    /// Attach read-only.
    pub is_read_only: bool,
    /// Host caching strategy; omitted = `Unsafe` (guest flushes are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// Partition UUID of the root device, when the root is a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Block I/O engine; omitted = `Sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

/// `Drive.cache_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Guest flush requests are not passed on: fastest, loses data on a host crash.
    Unsafe,
    /// Guest flushes reach the host file (fsync): what a disk holding work needs.
    Writeback,
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking reads and writes.
    Sync,
    /// io_uring (host kernel 5.10.51 or newer).
    Async,
}
