//! `vm.set`: resize a stopped VM; the work disk only grows.

use super::{check_sizes, files, query};
use crate::app::App;
use crate::error::{blocking, DaemonError, Result};
use banger_model::VmState;
use banger_rpc::{VmInfo, VmSetParams};

/// `vm.set`.
pub async fn set(app: &App, p: VmSetParams) -> Result<VmInfo> {
    let lock = app.vm_lock(&p.name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    if !matches!(rec.state, VmState::Stopped | VmState::Error) {
        return Err(DaemonError::BadRequest(format!(
            "VM {} is {}; stop it first (banger vm stop {})",
            rec.name,
            rec.state.as_str(),
            rec.name
        )));
    }
    let cpus = p.cpus.unwrap_or(rec.cpus);
    let memory_mib = p.memory_mib.unwrap_or(rec.memory_mib);
    let disk_mib = p.disk_mib.unwrap_or(rec.disk_mib);
    check_sizes(cpus, memory_mib, disk_mib)?;
    if disk_mib < rec.disk_mib {
        return Err(DaemonError::BadRequest(format!(
            "the work disk of {} can only grow (it is {}M; asked for {disk_mib}M)",
            rec.name, rec.disk_mib
        )));
    }
    let work = app.layout.vm_dir(&rec.id).join(files::WORK);
    if disk_mib > rec.disk_mib && work.exists() {
        let d = app.disks.clone();
        blocking("work disk growth", move || {
            d.grow(&work, disk_mib)
                .map_err(DaemonError::build("growing the work disk"))
        })
        .await?;
    }
    app.db(|s| s.set_vm_resources(&rec.id, cpus, memory_mib, disk_mib))?;
    query::show(app, &p.name)
}
