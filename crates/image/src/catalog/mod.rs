//! The catalog: named kernels and root filesystems that `banger image pull <name>` and
//! `banger kernel pull <name>` resolve through a JSON index.
//!
//! An index is reachable by URL (`http://`, `https://`, `file://`) or by path, and its
//! artifacts' `url`s may be relative to it, so a catalog is just a static directory:
//!
//! ```json
//! {
//!   "version": 1,
//!   "kernels": [{"name": "debian-6.1-cloud", "release": "6.1.0-40-cloud-amd64",
//!                "kernel":  {"url": "kernels/vmlinuz-6.1", "sha256": "…", "size": 8123456},
//!                "modules": {"url": "kernels/modules-6.1.tar.zst", "sha256": "…", "size": 12345678}}],
//!   "images":  [{"name": "debian-bookworm", "kernel": "debian-6.1-cloud",
//!                "rootfs": {"url": "images/debian-bookworm.tar.zst", "sha256": "…", "size": 300000000}}]
//! }
//! ```
//!
//! The index is the trust anchor: every artifact is downloaded into the
//! content-addressed [`crate::oci::BlobCache`] only after its exact size and sha256
//! matched what the index declares ([`download`]). Plain http would give the index
//! no integrity, so it is accepted only for loopback hosts (local test servers), and
//! no redirect may go from https to http: serve a catalog over https or from disk.

mod download;
mod error;
mod index;

pub use download::{download, fetch_index, MAX_INDEX_BYTES};
pub use error::{BoxError, CatalogError};
pub use index::{
    Artifact, CatalogIndex, ImageEntry, KernelEntry, Location, FORMAT_VERSION, MAX_NAME_LEN,
};
