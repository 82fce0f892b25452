//! Base images and per-VM disks.
//!
//! Everything here produces files with standard tools (`mmdebstrap`, `mkfs.ext4 -d`,
//! `debugfs -w`) and never mounts, loop-attaches or device-maps anything: creating a VM
//! must not need root, and a crashed build must leave nothing mounted behind.

pub mod catalog;
pub mod customize;
pub mod debian;
pub mod debian_unshare;
pub mod disks;
pub mod durable;
pub mod elf;
pub mod export;
pub mod ext4;
pub mod initrd;
pub mod kernel;
pub mod oci;
mod run;
pub mod seed;
pub mod vmlinux;

pub use debian::{build_debian, BuildRequest, BuiltImage};
pub use disks::{create_overlay_disk, create_work_disk, grow_disk, install_host_key};
pub use run::ToolError;

/// ext4 labels by which the guest init finds its disks (the host–guest contract).
pub use banger_contract::disk::{LABEL_OVERLAY, LABEL_ROOT, LABEL_WORK};

/// File names inside a published image directory.
pub mod files {
    /// The read-only base filesystem.
    pub const ROOTFS: &str = "rootfs.ext4";
    /// The image's own kernel (bzImage).
    pub const KERNEL: &str = "vmlinuz";
    /// banger's initrd built for that kernel.
    pub const INITRD: &str = "initrd.img";
    /// The image's /root, copied into every new work disk.
    pub const WORK_SEED: &str = "work-seed";
    /// What the image is (JSON).
    pub const MANIFEST: &str = "manifest.json";
}
