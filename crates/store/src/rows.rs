//! Converting between SQLite rows and model records.
//!
//! Rows are read into plain column structs first and validated afterwards, so
//! a bad value becomes a [`StoreError::Invalid`] naming the column instead of
//! an opaque conversion failure.

use crate::error::StoreError;
use banger_model::{ImageRecord, KernelRecord, RunConfig, VmName, VmRecord, VmState};
use rusqlite::Row;
use std::net::Ipv4Addr;

pub(crate) const VM_COLUMNS: &str =
    "id, name, image_id, state, ip, cpus, memory_mib, disk_mib, created_at, error, vmm, created_op, init";

pub(crate) const IMAGE_COLUMNS: &str =
    "id, name, source, kernel_release, size_bytes, created_at, kernel, run_config";

pub(crate) const KERNEL_COLUMNS: &str = "id, name, release, source, size_bytes, created_at";

/// A `vms` row as SQLite returns it.
pub(crate) struct VmRow {
    id: String,
    name: String,
    image_id: String,
    state: String,
    ip: String,
    cpus: i64,
    memory_mib: i64,
    disk_mib: i64,
    created_at: i64,
    error: Option<String>,
    vmm: String,
    created_op: Option<String>,
    init: String,
}

impl VmRow {
    /// Read the columns of [`VM_COLUMNS`], in order.
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            image_id: row.get(2)?,
            state: row.get(3)?,
            ip: row.get(4)?,
            cpus: row.get(5)?,
            memory_mib: row.get(6)?,
            disk_mib: row.get(7)?,
            created_at: row.get(8)?,
            error: row.get(9)?,
            vmm: row.get(10)?,
            created_op: row.get(11)?,
            init: row.get(12)?,
        })
    }

    pub(crate) fn into_record(self) -> Result<VmRecord, StoreError> {
        let bad = |what: &str, v: &dyn std::fmt::Display| {
            StoreError::Invalid(format!("VM {} has {what} {v}", self.id))
        };
        Ok(VmRecord {
            name: VmName::parse(&self.name).map_err(|e| bad("an invalid name:", &e))?,
            image_id: self.image_id.clone(),
            state: VmState::parse(&self.state).ok_or_else(|| bad("unknown state", &self.state))?,
            ip: parse_ip(&self.ip).map_err(|_| bad("invalid IP address", &self.ip))?,
            cpus: u32::try_from(self.cpus).map_err(|_| bad("cpu count", &self.cpus))?,
            memory_mib: u64::try_from(self.memory_mib)
                .map_err(|_| bad("memory size", &self.memory_mib))?,
            disk_mib: u64::try_from(self.disk_mib).map_err(|_| bad("disk size", &self.disk_mib))?,
            created_at: self.created_at,
            error: self.error.clone(),
            vmm: self
                .vmm
                .parse()
                .map_err(|_| bad("unknown vmm", &self.vmm))?,
            created_op: self.created_op.clone(),
            init: self
                .init
                .parse()
                .map_err(|_| bad("unknown init", &self.init))?,
            id: self.id,
        })
    }
}

/// An `images` row as SQLite returns it.
pub(crate) struct ImageRow {
    id: String,
    name: String,
    source: String,
    kernel_release: String,
    size_bytes: i64,
    created_at: i64,
    kernel: Option<String>,
    run_config: Option<String>,
}

impl ImageRow {
    /// Read the columns of [`IMAGE_COLUMNS`], in order.
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            source: row.get(2)?,
            kernel_release: row.get(3)?,
            size_bytes: row.get(4)?,
            created_at: row.get(5)?,
            kernel: row.get(6)?,
            run_config: row.get(7)?,
        })
    }

    pub(crate) fn into_record(self) -> Result<ImageRecord, StoreError> {
        let size_bytes = u64::try_from(self.size_bytes).map_err(|_| {
            StoreError::Invalid(format!("image {} has size {}", self.id, self.size_bytes))
        })?;
        let run_config = match &self.run_config {
            None => RunConfig::default(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                StoreError::Invalid(format!(
                    "image {} has an unreadable run config: {e}",
                    self.id
                ))
            })?,
        };
        Ok(ImageRecord {
            run_config,
            id: self.id,
            name: self.name,
            source: self.source,
            kernel_release: self.kernel_release,
            size_bytes,
            created_at: self.created_at,
            kernel: self.kernel,
        })
    }
}

/// A `kernels` row as SQLite returns it.
pub(crate) struct KernelRow {
    id: String,
    name: String,
    release: String,
    source: String,
    size_bytes: i64,
    created_at: i64,
}

impl KernelRow {
    /// Read the columns of [`KERNEL_COLUMNS`], in order.
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            release: row.get(2)?,
            source: row.get(3)?,
            size_bytes: row.get(4)?,
            created_at: row.get(5)?,
        })
    }

    pub(crate) fn into_record(self) -> Result<KernelRecord, StoreError> {
        let size_bytes = u64::try_from(self.size_bytes).map_err(|_| {
            StoreError::Invalid(format!("kernel {} has size {}", self.id, self.size_bytes))
        })?;
        Ok(KernelRecord {
            id: self.id,
            name: self.name,
            release: self.release,
            source: self.source,
            size_bytes,
            created_at: self.created_at,
        })
    }
}

pub(crate) fn parse_ip(s: &str) -> Result<Ipv4Addr, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Invalid(format!("{s:?} is not an IPv4 address")))
}

/// SQLite integers are signed; refuse u64 values that would wrap.
pub(crate) fn to_sql_int(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Invalid(format!("{what} {v} is larger than the database can store"))
    })
}

/// Unix seconds now. A clock before 1970 is recorded as 0 rather than failing.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
