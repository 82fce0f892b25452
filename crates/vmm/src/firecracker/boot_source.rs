//! `PUT /boot-source`: the kernel, its command line and the initrd.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Kernel arguments Firecracker guests need whatever the image: the serial console
/// Firecracker wires to its stdout, a reboot through the keyboard controller (the only
/// reset Firecracker turns into a VMM exit, which is how `SendCtrlAltDel` stops a
/// guest), reboot-on-panic so a broken guest ends its VMM instead of hanging, and no
/// PCI probing (every device is virtio-mmio; [`crate::NO_PCI_ARGS`]).
pub const BASE_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Body of `PUT /boot-source` (`BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the ELF vmlinux (Firecracker cannot boot a bzImage).
    pub kernel_image_path: PathBuf,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// [`BASE_BOOT_ARGS`] followed by the daemon's own arguments.
pub fn boot_args(extra: &str) -> String {
    format!("{BASE_BOOT_ARGS} {} {}", crate::NO_PCI_ARGS, extra.trim())
        .trim()
        .to_string()
}
