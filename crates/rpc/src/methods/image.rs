//! Methods of images and the catalog.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A published image as shown to users: the stored record is exactly what users see,
/// so the wire type is the record itself.
pub use banger_model::ImageRecord as ImageInfo;

method!(
    /// `image.build`: a Debian image from the archive.
    ImageBuild = "image.build", ImageBuildParams => ImageInfo
);
method!(
    /// `image.pull`: a catalog name or an OCI image from a registry.
    ImagePull = "image.pull", ImagePullParams => ImageInfo
);
method!(
    /// `image.delete`: refused while a VM uses it.
    ImageDelete = "image.delete", ImageNameParams => ()
);
method!(
    /// `image.show`.
    ImageShow = "image.show", ImageNameParams => ImageInfo
);
method!(
    /// `image.list`.
    ImageList = "image.list", NoParams => Vec<ImageInfo>
);
method!(
    /// `image.register`: a root filesystem from the daemon's host (and maybe a kernel).
    ImageRegister = "image.register", ImageRegisterParams => ImageInfo
);
method!(
    /// `image.promote`: a stopped VM becomes an image.
    ImagePromote = "image.promote", ImagePromoteParams => ImageInfo
);
method!(
    /// `image.cache_prune`: remove cached downloads no image was made from.
    ImageCachePrune = "image.cache_prune", CachePruneParams => CachePruneResult
);
method!(
    /// `image.warm`: make (or remake) a warm snapshot of an image for one VM shape.
    ImageWarm = "image.warm", ImageWarmParams => WarmInfo
);
method!(
    /// `image.warm_list`: every warm snapshot and whether it still fits its image.
    ImageWarmList = "image.warm_list", NoParams => Vec<WarmInfo>
);
method!(
    /// `image.warm_rm`: remove an image's warm snapshots (one shape, or all).
    ImageWarmRm = "image.warm_rm", ImageWarmParams => WarmRmResult
);
method!(
    /// `catalog.list`: what `pull NAME` can fetch.
    CatalogList = "catalog.list", NoParams => CatalogListing
);

/// Params of `image.build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuildParams {
    /// Image name; derived from the release when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Distribution release (e.g. `bookworm`); the default when absent.
    #[serde(default)]
    pub release: Option<String>,
    /// Extra Debian packages to install beyond banger's base set.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Params of `image.pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePullParams {
    /// A catalog name (`debian-bookworm`) or an OCI reference, e.g.
    /// `docker.io/library/debian:bookworm` or `localhost:5000/x:y`. A bare name
    /// without `/`, `:` or `@` is looked up in the catalog.
    pub reference: String,
    /// Image name; derived from the reference when absent (`debian-bookworm`).
    #[serde(default)]
    pub name: Option<String>,
    /// Kernel (from `kernel list`) an OCI image boots; the default image's kernel
    /// when absent. Catalog images name their own kernel.
    #[serde(default)]
    pub kernel: Option<String>,
}

/// Params of `image.register`. Paths are absolute, on the daemon's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRegisterParams {
    /// New image name.
    pub name: String,
    /// Root filesystem: an ext4 image file, or a tar archive (plain, gzip, zstd, xz).
    pub rootfs: PathBuf,
    /// Kernel from the kernel store; the default image's kernel when absent and no
    /// `kernel_file` is given.
    #[serde(default)]
    pub kernel: Option<String>,
    /// A kernel file to import for this image (as kernel `<name>`).
    #[serde(default)]
    pub kernel_file: Option<PathBuf>,
    /// Modules directory for `kernel_file` (banger builds its initrd from it).
    #[serde(default)]
    pub modules: Option<PathBuf>,
}

/// Params of `image.promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePromoteParams {
    /// The stopped VM.
    pub vm: String,
    /// New image name.
    pub name: String,
    /// Leave the VM's /root (its work disk) out of the new image's work seed.
    #[serde(default)]
    pub no_work: bool,
}

/// Params of methods addressing one image by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageNameParams {
    /// The image's name.
    pub name: String,
}

/// Params of `image.cache_prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruneParams {
    /// Only report what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// Reply of `image.cache_prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePruneResult {
    /// Blobs removed (or that would be).
    pub blobs: u64,
    /// Bytes freed (or that would be).
    pub bytes: u64,
    /// Blobs kept because an image was made from them.
    pub kept: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// Name to pull.
    pub name: String,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// Image entries: the kernel they boot; kernel entries: the release.
    #[serde(default)]
    pub detail: String,
    /// Download size in bytes.
    pub size_bytes: u64,
}

/// Reply of `catalog.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogListing {
    /// Where the catalog was read from; `None` when none is configured.
    pub location: Option<String>,
    /// Pullable images.
    pub images: Vec<CatalogItem>,
    /// Pullable kernels.
    pub kernels: Vec<CatalogItem>,
}

/// Params of `image.warm` and `image.warm_rm`: the image and the VM shape (each
/// unset size is the daemon's default for new VMs). For `image.warm_rm`, no size
/// and no init mode at all means every snapshot of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWarmParams {
    /// The image's name.
    pub name: String,
    /// vCPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Work disk, MiB.
    #[serde(default)]
    pub disk_mib: Option<u64>,
    /// Init mode of the VMs it serves.
    #[serde(default)]
    pub init: Option<banger_model::InitMode>,
}

impl ImageWarmParams {
    /// Whether any part of the shape was given.
    pub fn names_a_shape(&self) -> bool {
        self.cpus.is_some()
            || self.memory_mib.is_some()
            || self.disk_mib.is_some()
            || self.init.is_some()
    }
}

/// One warm snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmInfo {
    /// The image's name.
    pub image: String,
    /// The shape's directory name (`2c-1024m-4096d-agent`).
    pub shape: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Work disk, MiB.
    pub disk_mib: u64,
    /// Init mode.
    pub init: String,
    /// VMM it was saved with.
    pub vmm: String,
    /// Unix seconds when it was made.
    pub created_at: i64,
    /// Bytes on disk (state and both disks, allocated blocks).
    pub bytes: u64,
    /// How long making it took, ms.
    pub warm_ms: u64,
    /// `ready`, `stale (why)`, or `corrupt (why)`.
    pub status: String,
}

/// Reply of `image.warm_rm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmRmResult {
    /// Snapshots removed.
    pub removed: u64,
}
