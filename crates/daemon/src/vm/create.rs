//! `vm.create`: validate, reserve (name, address and id in one transaction), then
//! start unless asked not to.

use super::stages::Stages;
use super::{check_sizes, start};
use crate::app::App;
use crate::error::{DaemonError, Result};
use crate::images;
use banger_model::{VmName, VmState};
use banger_rpc::{ProgressSink, VmCreateParams, VmInfo};
use banger_store::ReserveVm;

/// A name for a VM created without one.
fn generated_name() -> Result<VmName> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    VmName::parse(&format!("vm-{n:04x}"))
        .map_err(|e| DaemonError::BadRequest(format!("generated name: {e}")))
}

/// `vm.create`: reserve, prepare and boot a VM; returns once ssh answers.
pub async fn create(
    app: &App,
    op_id: &str,
    p: VmCreateParams,
    progress: &ProgressSink,
) -> Result<VmInfo> {
    let cpus = p.cpus.unwrap_or(app.config.default_cpus);
    let memory_mib = p.memory_mib.unwrap_or(app.config.default_memory_mib);
    let disk_mib = p.disk_mib.unwrap_or(app.config.default_disk_mib);
    check_sizes(cpus, memory_mib, disk_mib)?;
    if !p.no_start {
        start::require_privilege(app)?;
    }
    let name = match p.name {
        Some(n) => n,
        None => generated_name()?,
    };
    let _op = app.ops.begin(op_id, "vm.create", name.as_str());
    let lock = app.vm_lock(name.as_str());
    let _guard = lock.lock().await;

    let mut st = Stages::new(name.as_str(), progress, Some((&app.ops, op_id)));
    let image_name = p
        .image
        .unwrap_or_else(|| banger_model::DEFAULT_IMAGE.to_string());
    if app.db(|s| s.get_vm_by_name(name.as_str())).is_ok() {
        return Err(DaemonError::AlreadyExists(format!(
            "a VM named {name} already exists (see banger vm list)"
        )));
    }
    let image = images::resolve(app, &image_name, progress).await?;
    let vmm = p.vmm.unwrap_or(app.config.vmm);
    // An explicit backend that cannot run here is refused before anything exists.
    app.backends
        .check(vmm, &app.layout.image_dir(&image.id), progress)
        .await?;

    st.begin("reserve");
    let subnet = app.config.subnet;
    let rec = app.db(|s| {
        s.reserve_vm(ReserveVm {
            name: name.clone(),
            image_id: image.id.clone(),
            cpus,
            memory_mib,
            disk_mib,
            subnet,
            vmm,
            created_op: Some(op_id.to_string()),
            init: p.init.unwrap_or_default(),
        })
    })?;
    app.events.vm(&rec, VmState::Creating, None);
    // Stored before the boot: in rootless mode the VM's network stack listens for
    // them from its start.
    if !p.ports.is_empty() {
        super::forward::save(app, &rec.id, &p.ports)?;
    }
    if p.no_start {
        app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
        app.events.vm(&rec, VmState::Stopped, None);
        let mut info = super::query::info_for(app, &app.db(|s| s.get_vm(&rec.id))?);
        info.timings = st.finish();
        return Ok(info);
    }
    start::boot_recorded(app, &rec, &image, st).await
}
