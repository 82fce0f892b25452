//! Per-VM disks, behind a small trait so the start machinery can be tested without
//! e2fsprogs. [`Ext4Disks`] makes real ext4 images with banger-image (standard tools,
//! nothing mounted).

use crate::error::Cause;
use std::path::Path;

/// Making and growing a VM's writable disks. Blocking: called on blocking threads.
pub trait Disks: Send + Sync {
    /// A sparse overlay disk (the upper layer of the guest's `/`) holding nothing but
    /// a new ssh host key for the guest, whose public line (`ssh-ed25519 AAAA…`) is
    /// written to `host_key` on the host: the key banger pins for this VM.
    fn create_overlay(&self, path: &Path, host_key: &Path) -> Result<(), Cause>;
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
    fn create_overlay(&self, path: &Path, host_key: &Path) -> Result<(), Cause> {
        banger_image::create_overlay_disk(path, banger_image::disks::OVERLAY_MIB)?;
        // The private half exists on the host only in a private directory beside
        // the disk, for as long as it takes to copy it in.
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".host-key-")
            .tempdir_in(dir)?;
        let (private, line) = banger_guest::keys::generate_host_key(tmp.path())?;
        banger_image::install_host_key(path, &private, &private.with_extension("pub"))?;
        banger_image::durable::write_file(host_key, format!("{line}\n").as_bytes())?;
        Ok(())
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
