//! Opening the database and sharing its connection.

use crate::error::StoreError;
use crate::schema::{self, MigrationStatus};
use rusqlite::{Connection, TransactionBehavior};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a writer waits for another writer (another daemon thread or a
/// second `Store` on the same file) before giving up with "database is locked".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the state database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up
    /// to date. Refuses with [`StoreError::TooNew`] if a newer banger wrote it.
    ///
    /// Several processes may open a fresh file at once; SQLite answers some of
    /// the set-up steps (switching to WAL, the first migration) with an
    /// immediate "database is locked" instead of waiting, so those are retried
    /// for up to the busy timeout.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::try_open(path) {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| StoreError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // The busy timeout must come first: the pragmas below may already
        // contend with another process opening the same file.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "SQLite refused WAL mode for {} (journal mode is {mode}); put the state directory on a local filesystem",
                path.display()
            )));
        }
        // Every write transaction (ours and the migrator's) takes the write
        // lock up front, so concurrent writers queue on the busy timeout
        // instead of failing on a read-to-write lock upgrade.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Report the schema state of the database at `path` without creating or
    /// modifying it (for `banger doctor` and upgrade checks).
    pub fn check_migrations(path: &Path) -> Result<MigrationStatus, StoreError> {
        schema::check(path)
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while holding the lock cannot leave a
    /// transaction half-applied (rusqlite rolls back on drop), so a poisoned
    /// mutex is safe to keep using.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
