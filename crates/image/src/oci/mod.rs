//! OCI/Docker images turned into banger base images.
//!
//! [`Applier`] applies verified layer blobs in order into a staging directory
//! (whiteouts, opaque directories, owners, modes, links, device nodes, xattrs), refusing
//! hostile content without ever writing outside the staging directory;
//! [`build_rootfs`] turns the tree into an ext4 image, writing owners and device nodes
//! that an unprivileged apply could only record.

mod apply;
mod cache;
mod debugfs;
mod entry;
mod error;
mod fixups;
pub(crate) mod fsat;
mod guard;
mod layer;
mod names;
mod pull;
pub mod registry;
mod rootfs;
mod tree;

pub use apply::{AppliedTree, Applier, ApplyOptions, LayerStats, OwnerMode, Whiteouts};
pub use cache::{BlobCache, PruneReport};
pub use error::ApplyError;
pub use fixups::{Device, Fixup, Fixups};
pub use layer::{is_layer_media_type, Compression, LayerDescriptor, Limits};
pub use pull::{
    apply_pulled, client, fetch, parse_reference, ImageConfig, PullError, PullEvent, PullOptions,
    PulledImage,
};
pub use rootfs::{build_rootfs, RootfsError, RootfsInfo};
pub use tree::{TreeEditor, TreeError};

/// The names in directory `fd`, without `.` and `..` (for [`crate::seed`]).
pub(crate) fn list_names(
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Vec<std::ffi::CString>> {
    fsat::list(fd)
}
