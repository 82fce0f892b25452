//! Per-VM disks, behind a small trait so the start machinery can be tested without
//! e2fsprogs. [`Ext4Disks`] makes real ext4 images with banger-image (standard tools,
//! nothing mounted).

use crate::error::Cause;
use std::path::Path;

/// Making and growing a VM's writable disks. Blocking: called on blocking threads.
pub trait Disks: Send + Sync {
    /// A sparse, empty overlay disk (the upper layer of the guest's `/`).
    fn create_overlay(&self, path: &Path) -> Result<(), Cause>;
    /// A sparse work disk of `mib` MiB (the guest's `/root`), seeded from `seed` and
    /// holding `public_key` as root's authorized key.
    fn create_work(
        &self,
        path: &Path,
        mib: u64,
        seed: &Path,
        public_key: &str,
    ) -> Result<(), Cause>;
    /// Grow the work disk at `path` to `mib` MiB.
    fn grow(&self, path: &Path, mib: u64) -> Result<(), Cause>;
}

/// ext4 images made with `mkfs.ext4 -d` and `debugfs`.
pub struct Ext4Disks;

impl Disks for Ext4Disks {
    fn create_overlay(&self, path: &Path) -> Result<(), Cause> {
        Ok(banger_image::create_overlay_disk(
            path,
            banger_image::disks::OVERLAY_MIB,
        )?)
    }

    fn create_work(
        &self,
        path: &Path,
        mib: u64,
        seed: &Path,
        public_key: &str,
    ) -> Result<(), Cause> {
        Ok(banger_image::create_work_disk(
            path,
            mib,
            Some(seed),
            public_key,
        )?)
    }

    fn grow(&self, path: &Path, mib: u64) -> Result<(), Cause> {
        Ok(banger_image::grow_disk(path, mib)?)
    }
}
