//! banger's durable state: VMs, images and kernels in one SQLite database.
//!
//! Why SQLite: the daemon needs atomic "pick a free IP and claim a name"
//! across restarts and across concurrent requests, and users need to be able
//! to look at the state with ordinary tools. WAL mode lets readers run while a
//! write is in progress; `BEGIN IMMEDIATE` serialises writers without the
//! deadlock-prone read-then-upgrade pattern.
//!
//! The API is synchronous: the daemon calls it from `spawn_blocking`. A
//! [`Store`] is `Send + Sync` (one connection behind a mutex), so it can be
//! shared in an `Arc`; separate `Store`s on the same file are also safe.

#![warn(missing_docs)]

mod error;
mod id;
mod images;
mod kernels;
mod rows;
mod schema;
mod store;
mod vms;
mod workspaces;

pub use error::StoreError;
pub use id::new_id;
pub use schema::{MigrationStatus, SCHEMA_VERSION};
pub use store::Store;
pub use vms::ReserveVm;

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
