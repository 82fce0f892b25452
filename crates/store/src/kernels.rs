//! Kernel rows: the local kernel store that images boot from.

use crate::error::StoreError;
use crate::rows::{to_sql_int, KernelRow, KERNEL_COLUMNS};
use crate::store::Store;
use crate::vms::exists;
use banger_model::KernelRecord;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

impl Store {
    /// Record an imported kernel. [`StoreError::KernelNameTaken`] if the name is
    /// in use.
    pub fn insert_kernel(&self, k: &KernelRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if exists(&tx, "SELECT 1 FROM kernels WHERE name = ?1", &k.name)? {
            return Err(StoreError::KernelNameTaken(k.name.clone()));
        }
        tx.execute(
            &format!("INSERT INTO kernels ({KERNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                k.id,
                k.name,
                k.release,
                k.source,
                to_sql_int("kernel size", k.size_bytes)?,
                k.created_at,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The kernel named `name`.
    pub fn get_kernel_by_name(&self, name: &str) -> Result<KernelRecord, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {KERNEL_COLUMNS} FROM kernels WHERE name = ?1"),
                [name],
                KernelRow::read,
            )
            .optional()?;
        row.map(KernelRow::into_record)
            .transpose()?
            .ok_or_else(|| StoreError::KernelNotFound(name.to_string()))
    }

    /// All kernels, oldest first (ties broken by name).
    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {KERNEL_COLUMNS} FROM kernels ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map([], KernelRow::read)?;
        rows.map(|r| r.map_err(StoreError::from)?.into_record())
            .collect()
    }

    /// Forget a kernel. Images made with it keep their own copy of its files, so
    /// this never breaks an image.
    pub fn delete_kernel(&self, name: &str) -> Result<KernelRecord, StoreError> {
        let k = self.get_kernel_by_name(name)?;
        self.conn()
            .execute("DELETE FROM kernels WHERE id = ?1", [&k.id])?;
        Ok(k)
    }
}
