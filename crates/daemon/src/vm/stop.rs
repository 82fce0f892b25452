//! `vm.stop` (graceful), `vm.kill` (force), `vm.restart`, and the runtime teardown
//! every verb that ends a VM shares.
//!
//! Stop: the guest is asked to flush and power off (through its agent) → up to
//! [`POWEROFF_GRACE`] for the VMM to exit → forced off (the backend's kill) → tap,
//! sockets and `handles.json` removed (the console log stays for `vm logs`) →
//! `stopped`.

use super::guest::Target;
use super::stages::Stages;
use super::{query, start};
use crate::app::App;
use crate::error::{DaemonError, Result};
use crate::handles;
use banger_helper::PrivOp;
use banger_model::{VmRecord, VmState};
use banger_rpc::{ProgressSink, VmInfo};
use std::time::Duration;

/// How long a guest gets to power off after being asked before it is forced off.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// Tear down what a VM has on the host besides its record and disks: the VMM
/// (killed), the tap, the backend's sockets and the handles file. The console log
/// stays for `vm logs`.
pub(crate) async fn teardown_runtime(app: &App, rec: &VmRecord) -> Result<()> {
    let vm_dir = app.layout.vm_dir(&rec.id);
    let rt = app.layout.vm_runtime(&rec.id);
    // Its name stops resolving now; its agent connection dies with the VMM (a next
    // boot gets a new client).
    app.dns.names.remove(rec.name.as_str());
    app.guest.forget(&rec.id);
    if let Some(h) = handles::read(&vm_dir) {
        let vmm = app.backends.for_handles(&h.vmm);
        vmm.kill(&h.vmm)
            .await
            .map_err(DaemonError::vmm(format!("stopping VM {}", rec.name)))?;
    }
    // Whatever the handles said (or without any: a daemon killed between launch and
    // recording them, a lost or torn file), no VMM of this VM may survive: each
    // backend kills one still running for this runtime directory, then removes
    // its files.
    for b in app.backends.all() {
        b.kill_orphans(&rt).await;
        b.cleanup(&rt);
    }
    if app.rootless.is_some() {
        // passt quits with its QEMU; one left by a start that failed early does not.
        super::userspace::stop_passt(&rt.join(super::userspace::PASST_SOCKET)).await;
        super::userspace::cleanup(&rt);
        handles::remove(&vm_dir);
        return Ok(());
    }
    app.privileged
        .run(PrivOp::DeleteTap {
            name: banger_host::tap_name(&rec.id),
        })
        .await
        .map_err(DaemonError::host(format!(
            "removing the tap of VM {}",
            rec.name
        )))?;
    handles::remove(&vm_dir);
    Ok(())
}

/// `vm.stop`: flush the guest's filesystems and power it off cleanly, forcing it off
/// only if it does not go within [`POWEROFF_GRACE`].
pub async fn stop(app: &App, op_id: &str, name: &str, progress: &ProgressSink) -> Result<VmInfo> {
    let _op = app.ops.begin(op_id, "vm.stop", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let mut st = Stages::new(name, progress, Some((&app.ops, op_id)));
    stop_locked(app, name, &mut st).await?;
    let mut info = query::show(app, name)?;
    info.timings = st.finish();
    Ok(info)
}

/// `vm.stop` with the VM's lock held.
async fn stop_locked(app: &App, name: &str, st: &mut Stages<'_>) -> Result<()> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if let Some(h) = handles::read(&app.layout.vm_dir(&rec.id)) {
        let vmm = app.backends.for_handles(&h.vmm);
        if vmm.is_alive(&h.vmm, &rec.id) {
            st.begin("sync");
            let target = Target {
                id: &rec.id,
                name: rec.name.as_str(),
                handles: &h.vmm,
            };
            if let Err(e) = app.guest.shutdown(target).await {
                tracing::warn!(vm = %name, "the guest could not be asked to power off: {e}");
            }
            st.begin("poweroff");
            if !vmm.wait_exit(&h.vmm, POWEROFF_GRACE).await {
                tracing::warn!(vm = %name, "guest did not power off in time; forcing it off");
                st.begin("force-off");
            }
        }
    }
    st.begin("cleanup");
    teardown_runtime(app, &rec).await?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
    app.events.vm(&rec, VmState::Stopped, None);
    Ok(())
}

/// `vm.kill`: force the VM off now. The guest gets no chance to flush.
pub async fn kill(app: &App, name: &str) -> Result<VmInfo> {
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    teardown_runtime(app, &rec).await?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
    app.events.vm(&rec, VmState::Stopped, None);
    query::show(app, name)
}

/// `vm.restart`: stop then start under one lock.
pub async fn restart(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo> {
    let _op = app.ops.begin(op_id, "vm.restart", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let mut st = Stages::new(name, progress, Some((&app.ops, op_id)));
    stop_locked(app, name, &mut st).await?;
    st.finish();
    start::start_locked(app, op_id, name, progress).await
}
