//! `PUT /machine-config`: vCPUs and memory.

use serde::{Deserialize, Serialize};

/// Firecracker's vCPU limit (`MachineConfiguration.vcpu_count`: 1..=32).
pub const MAX_VCPUS: u32 = 32;

/// Body of `PUT /machine-config` (`MachineConfiguration`).
///
/// Only what banger sets: SMT stays off (Firecracker's default; with it on the vCPU
/// count would have to be even) and the deprecated `cpu_template` is never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs (1..=32).
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only); omitted = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking for diff snapshots; omitted = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Huge pages backing guest memory; omitted = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// `MachineConfiguration.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    None,
    /// 2 MiB huge pages (the host must have them reserved).
    #[serde(rename = "2M")]
    TwoMiB,
}
