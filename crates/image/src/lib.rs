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
pub use disks::{create_overlay_disk, create_work_disk, grow_disk};
pub use run::ToolError;

/// ext4 label of the shared read-only base image (the guest init finds disks by label).
pub const LABEL_ROOT: &str = "banger-root";
/// ext4 label of the per-VM overlay disk (upper layer of /).
pub const LABEL_OVERLAY: &str = "banger-overlay";
/// ext4 label of the per-VM work disk, mounted at /root.
pub const LABEL_WORK: &str = "banger-work";

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
