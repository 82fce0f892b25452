//! `vm.delete` and `vm.prune`: what kill does, then the VM's disks, directories and
//! record. Irreversible.

use super::stop::teardown_runtime;
use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_model::{VmRecord, VmState};
use banger_rpc::{PruneResult, VmDeleteParams};

/// `vm.delete`. A running VM is refused unless `force`; with `created_op`, only the
/// VM that call created is deleted (a same-named older VM is left alone).
pub async fn delete(app: &App, p: VmDeleteParams) -> Result<()> {
    let name = p.name.as_str();
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if let Some(op) = &p.created_op {
        if rec.created_op.as_deref() != Some(op.as_str()) {
            return Err(DaemonError::NotFound(format!(
                "VM {name} was not created by operation {op}; it is left as it is"
            )));
        }
    }
    if !p.force && rec.state == VmState::Running {
        return Err(DaemonError::BadRequest(format!(
            "VM {name} is running; stop it first (banger vm stop {name}) or delete it anyway with banger vm delete -f {name}"
        )));
    }
    delete_locked(app, &rec).await
}

/// Delete `rec` with its lock held.
async fn delete_locked(app: &App, rec: &VmRecord) -> Result<()> {
    teardown_runtime(app, rec).await?;
    for dir in [app.layout.vm_dir(&rec.id), app.layout.vm_runtime(&rec.id)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DaemonError::io("removing", &dir))?;
        }
    }
    app.db(|s| s.delete_vm(&rec.id))?;
    app.events.deleted(rec);
    crate::ssh_files::refresh(app);
    tracing::info!(vm = %rec.name, "vm deleted");
    Ok(())
}

/// `vm.prune`: delete every VM that is stopped or failed. Running and in-flight VMs
/// stay.
pub async fn prune(app: &App) -> Result<PruneResult> {
    let mut deleted = vec![];
    for rec in app.db(|s| s.list_vms())? {
        if !matches!(rec.state, VmState::Stopped | VmState::Error) {
            continue;
        }
        let lock = app.vm_lock(rec.name.as_str());
        let _guard = lock.lock().await;
        // Re-read under the lock: it may have been started meanwhile.
        match app.db(|s| s.get_vm(&rec.id)) {
            Ok(now) if matches!(now.state, VmState::Stopped | VmState::Error) => {
                delete_locked(app, &now).await?;
                deleted.push(now.name.to_string());
            }
            _ => {}
        }
    }
    Ok(PruneResult { deleted })
}
