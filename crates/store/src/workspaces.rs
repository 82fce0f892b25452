//! Workspace records: which host repository a VM holds, where, and at which commit.

use crate::error::StoreError;
use crate::rows::now;
use crate::store::Store;
use banger_model::WorkspaceRecord;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Record (or replace) the workspace of VM `vm_id`.
    pub fn set_workspace(&self, vm_id: &str, ws: &WorkspaceRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO workspaces (vm_id, host_path, guest_path, head, prepared_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(vm_id) DO UPDATE SET host_path = ?2, guest_path = ?3, head = ?4, prepared_at = ?5",
            params![vm_id, ws.host_path, ws.guest_path, ws.head, ws.prepared_at.max(now())],
        )?;
        Ok(())
    }

    /// The workspace of VM `vm_id`, if it has one.
    pub fn get_workspace(&self, vm_id: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT host_path, guest_path, head, prepared_at FROM workspaces WHERE vm_id = ?1",
                [vm_id],
                |r| {
                    Ok(WorkspaceRecord {
                        host_path: r.get(0)?,
                        guest_path: r.get(1)?,
                        head: r.get(2)?,
                        prepared_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}
