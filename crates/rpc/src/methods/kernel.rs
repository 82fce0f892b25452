//! Methods of the kernel store.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A stored kernel as shown to users.
pub use banger_model::KernelRecord as KernelInfo;

method!(
    /// `kernel.import`: a kernel file from the daemon's host, with banger's initrd built for it.
    KernelImport = "kernel.import", KernelImportParams => KernelInfo
);
method!(
    /// `kernel.pull`: a kernel from the catalog.
    KernelPull = "kernel.pull", KernelNameParams => KernelInfo
);
method!(
    /// `kernel.list`.
    KernelList = "kernel.list", NoParams => Vec<KernelInfo>
);
method!(
    /// `kernel.show`.
    KernelShow = "kernel.show", KernelNameParams => KernelInfo
);
method!(
    /// `kernel.delete`: images keep their own copy.
    KernelDelete = "kernel.delete", KernelNameParams => ()
);

/// Params of `kernel.import`. Paths are absolute, on the daemon's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelImportParams {
    /// Kernel image: a bzImage (`/boot/vmlinuz-*`) or an ELF vmlinux.
    pub path: PathBuf,
    /// Kernel name; the kernel's release when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Release override, when the kernel file does not say.
    #[serde(default)]
    pub release: Option<String>,
    /// Modules: a directory holding `lib/modules/<release>` (or that directory itself).
    /// Without it the kernel must have virtio, ext4 and overlay built in.
    #[serde(default)]
    pub modules: Option<PathBuf>,
    /// A ready initrd that runs banger's init (advanced; replaces building one).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
}

/// Params of methods addressing one kernel by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelNameParams {
    /// The kernel's name.
    pub name: String,
}
