//! Forward-only migrations and the schema version check.
//!
//! The schema version lives in SQLite's `user_version`; migration N brings the
//! database to version N. There are no down migrations: an older banger
//! refuses a newer database instead of guessing what it means.

use crate::error::StoreError;
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{Migrations, M};
use std::path::Path;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_initial.sql")),
    M::up(include_str!("migrations/002_workspaces.sql")),
    M::up(include_str!("migrations/003_vmm.sql")),
    M::up(include_str!("migrations/004_kernels.sql")),
    M::up(include_str!("migrations/005_created_op.sql")),
    M::up(include_str!("migrations/006_init_run_config.sql")),
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// What [`crate::Store::check_migrations`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStatus {
    /// No database file yet; the first `open` creates it.
    Missing,
    /// The database is at this binary's schema version.
    Current(u32),
    /// The database is older; `open` will migrate it.
    Pending {
        /// Version in the database.
        db: u32,
        /// Version this binary migrates to.
        binary: u32,
    },
    /// The database is newer than this binary; `open` will refuse it.
    TooNew {
        /// Version in the database.
        db: u32,
        /// Newest version this binary knows.
        binary: u32,
    },
}

impl MigrationStatus {
    fn classify(db: u32) -> Self {
        let binary = SCHEMA_VERSION;
        match db.cmp(&binary) {
            std::cmp::Ordering::Equal => MigrationStatus::Current(db),
            std::cmp::Ordering::Less => MigrationStatus::Pending { db, binary },
            std::cmp::Ordering::Greater => MigrationStatus::TooNew { db, binary },
        }
    }
}

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // user_version is a signed 32-bit field; a negative value is nothing we
    // wrote, so treat it as "newer than anything we know".
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// Bring `conn` to [`SCHEMA_VERSION`], or refuse a newer database.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let too_new = |db| StoreError::TooNew {
        path: path.to_path_buf(),
        db,
        binary: SCHEMA_VERSION,
    };
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    match MigrationStatus::classify(user_version(conn).map_err(open_err)?) {
        MigrationStatus::Current(_) => return Ok(()),
        MigrationStatus::TooNew { db, .. } => return Err(too_new(db)),
        MigrationStatus::Pending { .. } | MigrationStatus::Missing => {}
    }
    match Migrations::from_slice(MIGRATIONS).to_latest(conn) {
        Ok(()) => Ok(()),
        Err(source) => {
            // Another process may have migrated between our version check and
            // the migration transaction; then our attempt failed harmlessly
            // (it was rolled back) and the database is what we want.
            match MigrationStatus::classify(user_version(conn).map_err(open_err)?) {
                MigrationStatus::Current(_) => Ok(()),
                MigrationStatus::TooNew { db, .. } => Err(too_new(db)),
                _ => Err(StoreError::Migrate {
                    path: path.to_path_buf(),
                    binary: SCHEMA_VERSION,
                    source,
                }),
            }
        }
    }
}

/// Read the schema version of the database at `path` without creating or
/// changing it.
///
/// A read-only SQLite connection to a WAL database still creates `-wal` and
/// `-shm` files if they are missing, which would leave droppings beside a
/// database nobody has open. They are missing exactly when no connection is
/// open and the last one checkpointed everything into the main file, so then
/// the file is read as immutable (no side files, no locks). When they exist,
/// a plain read-only connection sees committed but uncheckpointed changes.
pub(crate) fn check(path: &Path) -> Result<MigrationStatus, StoreError> {
    let inspect_err = |source| StoreError::Inspect {
        path: path.to_path_buf(),
        source,
    };
    if !path.try_exists().map_err(inspect_err)? {
        return Ok(MigrationStatus::Missing);
    }
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let live = Path::new(&wal).try_exists().map_err(inspect_err)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if live {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    }
    .map_err(open_err)?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)
        .map_err(open_err)?;
    let db = user_version(&conn).map_err(open_err)?;
    Ok(MigrationStatus::classify(db))
}

/// `file:PATH?immutable=1`, escaping the characters SQLite's URI parser treats
/// specially in the path part.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn immutable_uri_escapes_specials() {
        assert_eq!(
            immutable_uri(Path::new("/a b/x%?#.db")),
            "file:/a b/x%25%3f%23.db?immutable=1"
        );
    }

    #[test]
    fn classify_compares_with_binary() {
        assert_eq!(
            MigrationStatus::classify(SCHEMA_VERSION),
            MigrationStatus::Current(SCHEMA_VERSION)
        );
        assert_eq!(
            MigrationStatus::classify(0),
            MigrationStatus::Pending {
                db: 0,
                binary: SCHEMA_VERSION
            }
        );
        assert_eq!(
            MigrationStatus::classify(SCHEMA_VERSION + 1),
            MigrationStatus::TooNew {
                db: SCHEMA_VERSION + 1,
                binary: SCHEMA_VERSION
            }
        );
    }
}
