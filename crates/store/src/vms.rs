//! VM rows: reservation (name + IP + id in one transaction) and lifecycle.

use crate::error::StoreError;
use crate::id::new_id;
use crate::rows::{now, parse_ip, to_sql_int, VmRow, VM_COLUMNS};
use crate::store::Store;
use banger_model::{InitMode, Subnet, VmName, VmRecord, VmState, VmmChoice};
use rusqlite::{params, OptionalExtension, Transaction};
use std::net::Ipv4Addr;

/// What `vm create` asks the store to claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveVm {
    /// The unique name.
    pub name: VmName,
    /// Id of an existing image.
    pub image_id: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in MiB.
    pub disk_mib: u64,
    /// The subnet guest addresses come from.
    pub subnet: Subnet,
    /// The VMM backend asked for.
    pub vmm: VmmChoice,
    /// Op id of the creating call (see [`VmRecord::created_op`]).
    pub created_op: Option<String>,
    /// Who is the guest's init.
    pub init: InitMode,
}

impl Store {
    /// Claim a name, a fresh id and the lowest free guest IP, and record the VM
    /// as `creating`, all in one `BEGIN IMMEDIATE` transaction: two concurrent
    /// reservations (threads or processes) can never get the same IP or name.
    pub fn reserve_vm(&self, req: ReserveVm) -> Result<VmRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if exists(&tx, "SELECT 1 FROM vms WHERE name = ?1", req.name.as_str())? {
            return Err(StoreError::NameTaken(req.name.to_string()));
        }
        if !exists(&tx, "SELECT 1 FROM images WHERE id = ?1", &req.image_id)? {
            return Err(StoreError::ImageIdNotFound(req.image_id));
        }
        let taken = taken_ips(&tx)?;
        let ip = req
            .subnet
            .allocate(&taken)
            .map_err(StoreError::NoFreeAddress)?;
        let id = loop {
            let id = new_id();
            if !exists(&tx, "SELECT 1 FROM vms WHERE id = ?1", &id)? {
                break id;
            }
        };
        let rec = VmRecord {
            id,
            name: req.name,
            image_id: req.image_id,
            state: VmState::Creating,
            ip,
            cpus: req.cpus,
            memory_mib: req.memory_mib,
            disk_mib: req.disk_mib,
            created_at: now(),
            error: None,
            vmm: req.vmm,
            created_op: req.created_op,
            init: req.init,
        };
        tx.execute(
            &format!(
                "INSERT INTO vms ({VM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                rec.id,
                rec.name.as_str(),
                rec.image_id,
                rec.state.as_str(),
                rec.ip.to_string(),
                i64::from(rec.cpus),
                to_sql_int("memory size", rec.memory_mib)?,
                to_sql_int("disk size", rec.disk_mib)?,
                rec.created_at,
                rec.error,
                rec.vmm.as_str(),
                rec.created_op,
                rec.init.as_str(),
            ],
        )?;
        tx.commit()?;
        Ok(rec)
    }

    /// The VM named `name`.
    pub fn get_vm_by_name(&self, name: &str) -> Result<VmRecord, StoreError> {
        self.query_vm("name", name)?
            .ok_or_else(|| StoreError::VmNotFound(name.to_string()))
    }

    /// The VM with id `id`.
    pub fn get_vm(&self, id: &str) -> Result<VmRecord, StoreError> {
        self.query_vm("id", id)?
            .ok_or_else(|| StoreError::VmIdNotFound(id.to_string()))
    }

    /// All VMs, oldest first (ties broken by name, so the order is stable).
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {VM_COLUMNS} FROM vms ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map([], VmRow::read)?;
        rows.map(|r| r.map_err(StoreError::from)?.into_record())
            .collect()
    }

    /// Record a lifecycle transition. `error` replaces the stored error (pass
    /// `None` to clear it when leaving the `error` state).
    pub fn set_vm_state(
        &self,
        id: &str,
        state: VmState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE vms SET state = ?2, error = ?3 WHERE id = ?1",
            params![id, state.as_str(), error],
        )?;
        if n == 0 {
            return Err(StoreError::VmIdNotFound(id.to_string()));
        }
        Ok(())
    }

    /// Change a VM's size (the caller checks it is stopped and that the disk only grows).
    pub fn set_vm_resources(
        &self,
        id: &str,
        cpus: u32,
        memory_mib: u64,
        disk_mib: u64,
    ) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE vms SET cpus = ?2, memory_mib = ?3, disk_mib = ?4 WHERE id = ?1",
            params![
                id,
                cpus,
                to_sql_int("memory_mib", memory_mib)?,
                to_sql_int("disk_mib", disk_mib)?
            ],
        )?;
        if n == 0 {
            return Err(StoreError::VmIdNotFound(id.to_string()));
        }
        Ok(())
    }

    /// Forget a VM (its name and IP become free). The caller removes its
    /// directories; [`StoreError::VmIdNotFound`] if it was already gone.
    pub fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        let n = self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(StoreError::VmIdNotFound(id.to_string()));
        }
        Ok(())
    }

    fn query_vm(&self, column: &str, value: &str) -> Result<Option<VmRecord>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE {column} = ?1"),
                [value],
                VmRow::read,
            )
            .optional()?;
        row.map(VmRow::into_record).transpose()
    }
}

pub(crate) fn exists(tx: &Transaction<'_>, sql: &str, value: &str) -> Result<bool, StoreError> {
    Ok(tx.query_row(sql, [value], |_| Ok(())).optional()?.is_some())
}

fn taken_ips(tx: &Transaction<'_>) -> Result<Vec<Ipv4Addr>, StoreError> {
    let mut stmt = tx.prepare("SELECT ip FROM vms")?;
    let ips = stmt.query_map([], |r| r.get::<_, String>(0))?;
    ips.map(|ip| parse_ip(&ip?)).collect()
}
