//! Everything the store can refuse or fail at, phrased for the CLI user.

use banger_model::NetError;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("could not create the state directory {}: {source}; check that its parent is writable by this user", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database file's metadata could not be read.
    #[error("could not inspect the database file {}: {source}; check the permissions of the state directory", path.display())]
    Inspect {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open or configure the database file.
    #[error("could not open the database at {}: {source}; check the file's permissions, or move it away if it is not a banger database", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer banger with more migrations.
    #[error("the database at {} was written by a newer banger (schema {db}, this binary knows {binary}); upgrade banger", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Schema version recorded in the database.
        db: u32,
        /// Newest schema version this binary knows.
        binary: u32,
    },
    /// Applying a migration failed (it was rolled back).
    #[error("could not upgrade the database at {} to schema {binary}: {source}; the database is unchanged, restore a backup or report a bug", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The schema version being migrated to.
        binary: u32,
        /// The underlying error.
        #[source]
        source: rusqlite_migration::Error,
    },
    /// A query failed for a reason the store does not classify.
    #[error(
        "database query failed: {0}; if this persists, check disk space and run banger doctor"
    )]
    Sqlite(#[from] rusqlite::Error),
    /// A VM with that name exists.
    #[error("a VM named {0} already exists (see banger vm list)")]
    NameTaken(String),
    /// An image with that name exists.
    #[error("an image named {0} already exists (see banger image list); delete it first or pick another name")]
    ImageNameTaken(String),
    /// No VM has that name.
    #[error("no VM named {0} (see banger vm list)")]
    VmNotFound(String),
    /// No VM has that id.
    #[error("no VM with id {0}; it may have been deleted meanwhile (see banger vm list)")]
    VmIdNotFound(String),
    /// No image has that name.
    #[error("no image named {0} (see banger image list, or build one with banger image build)")]
    ImageNotFound(String),
    /// No image has that id.
    #[error("no image with id {0}; it may have been deleted meanwhile (see banger image list)")]
    ImageIdNotFound(String),
    /// A kernel with that name exists.
    #[error("a kernel named {0} already exists (see banger kernel list); remove it first (banger kernel rm) or pick another name")]
    KernelNameTaken(String),
    /// No kernel has that name.
    #[error("no kernel named {0} (see banger kernel list; add one with banger kernel import PATH or banger kernel pull NAME)")]
    KernelNotFound(String),
    /// The image is still the base of some VMs.
    #[error("image {image} is used by {}: {}; delete those VMs first (banger vm delete NAME)", if vms.len() == 1 { "VM" } else { "VMs" }, vms.join(", "))]
    ImageInUse {
        /// The image's name.
        image: String,
        /// Names of the VMs using it.
        vms: Vec<String>,
    },
    /// Every guest address in the subnet is taken.
    #[error(transparent)]
    NoFreeAddress(NetError),
    /// A value cannot be stored or a stored value cannot be read back.
    #[error("invalid value in the database: {0}; the database may have been edited by hand, restore a backup")]
    Invalid(String),
}

impl StoreError {
    /// Whether this is one of the "no such VM / image" errors, which the daemon
    /// answers with `not_found`.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::VmNotFound(_)
                | StoreError::VmIdNotFound(_)
                | StoreError::ImageNotFound(_)
                | StoreError::ImageIdNotFound(_)
                | StoreError::KernelNotFound(_)
        )
    }

    /// Whether SQLite gave up on a lock held by another connection.
    pub(crate) fn is_busy(&self) -> bool {
        let sqlite = match self {
            StoreError::Open { source, .. } | StoreError::Sqlite(source) => Some(source),
            StoreError::Migrate {
                source: rusqlite_migration::Error::RusqliteError { err, .. },
                ..
            } => Some(err),
            _ => None,
        };
        sqlite.and_then(rusqlite::Error::sqlite_error_code)
            == Some(rusqlite::ErrorCode::DatabaseBusy)
    }

    /// Whether this is a name clash, which the daemon answers with
    /// `already_exists`.
    pub fn is_name_taken(&self) -> bool {
        matches!(
            self,
            StoreError::NameTaken(_)
                | StoreError::ImageNameTaken(_)
                | StoreError::KernelNameTaken(_)
        )
    }
}
