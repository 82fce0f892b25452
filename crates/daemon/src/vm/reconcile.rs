//! Keeping records true to reality: re-adoption on daemon start and a liveness
//! monitor while the daemon runs.
//!
//! QEMU and Firecracker each run in a session of their own, so guests outlive the
//! daemon. On start, [`reconcile`] re-adopts every VM whose VMM still runs (from its
//! `handles.json`) and cleans up the others; then [`monitor`] notices VMMs that exit
//! behind the daemon's back (guest `poweroff`, OOM kill, `kill -9`). Taps left by
//! VMs that are gone (a daemon killed between creating a tap and recording the VM,
//! a VM deleted while its teardown failed) are removed on start too
//! ([`reclaim_taps`]).

use super::stop::teardown_runtime;
use crate::app::App;
use crate::handles;
use banger_helper::{HelperError, PrivOp};
use banger_model::{VmRecord, VmState};
use std::collections::BTreeSet;
use std::time::Duration;

/// How often the monitor checks that running VMs' VMMs are alive.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(2);

/// Bring one VM's record in line with reality: a `running` VM whose VMM is gone is
/// cleaned up and marked stopped; a half-created one (its daemon died) is marked
/// error. Returns true if the record changed.
pub(crate) async fn settle(app: &App, rec: &VmRecord) -> bool {
    if !matches!(rec.state, VmState::Running | VmState::Creating) {
        return false;
    }
    let alive = handles::read(&app.layout.vm_dir(&rec.id))
        .map(|h| app.backends.for_handles(&h.vmm).is_alive(&h.vmm, &rec.id))
        .unwrap_or(false);
    if alive && rec.state == VmState::Running {
        return false;
    }
    super::forward::close(app, rec.name.as_str());
    if let Err(e) = teardown_runtime(app, rec).await {
        tracing::warn!(vm = %rec.name, "cleaning up after a gone VMM: {e}");
    }
    let (state, err) = match rec.state {
        VmState::Creating => (
            VmState::Error,
            Some("bangerd stopped while the VM was being created or started"),
        ),
        _ => (VmState::Stopped, None),
    };
    match app.db(|s| s.set_vm_state(&rec.id, state, err)) {
        Ok(()) => app.events.vm(rec, state, err),
        Err(e) => tracing::warn!(vm = %rec.name, "recording the VM as {}: {e}", state.as_str()),
    }
    tracing::warn!(vm = %rec.name, state = state.as_str(), "VM's VMM is gone (guest powered off, or it was killed); cleaned up");
    true
}

/// On daemon start: VMs whose VMM still runs stay running (re-adopted, same guest);
/// the others are cleaned up (see [`settle`]).
pub async fn reconcile(app: &App) {
    let vms = match app.db(|s| s.list_vms()) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("reconcile: listing VMs failed: {e}");
            return;
        }
    };
    for rec in vms {
        if !settle(app, &rec).await && rec.state == VmState::Running {
            tracing::info!(vm = %rec.name, "re-adopted running VM");
            super::forward::sync(app, &rec);
            super::network::reisolate(app, &rec).await;
            app.dns.names.set(rec.name.as_str(), rec.ip);
        }
    }
    reclaim_taps(app).await;
}

/// Remove every tap of this daemon's that no running VM uses. With the helper, the
/// candidates are the taps it recorded for this user; in-process (no record), the
/// existing taps of this daemon's VMs that are not running. Runs before the daemon
/// serves, so no start is under way.
pub(crate) async fn reclaim_taps(app: &App) {
    if app.rootless.is_some() {
        return;
    }
    let Ok(vms) = app.db(|s| s.list_vms()) else {
        return;
    };
    let tap = |r: &VmRecord| banger_host::tap_name(&r.id);
    let in_use: BTreeSet<String> = vms
        .iter()
        .filter(|r| r.state == VmState::Running)
        .map(tap)
        .collect();
    let (candidates, recorded) = match app.privileged.list_tap_names().await {
        Ok(names) => (names, true),
        Err(HelperError::NeedsHelper(_)) => {
            let mut existing = vec![];
            for r in vms.iter().filter(|r| r.state != VmState::Running) {
                let name = tap(r);
                if banger_host::link_exists(&name).await.unwrap_or(false) {
                    existing.push(name);
                }
            }
            (existing, false)
        }
        Err(e) => {
            tracing::debug!("not reclaiming taps: {e}");
            return;
        }
    };
    for name in candidates.into_iter().filter(|t| !in_use.contains(t)) {
        match app
            .privileged
            .run(PrivOp::DeleteTap { name: name.clone() })
            .await
        {
            Ok(()) if recorded => {
                tracing::info!(tap = %name, "removed the tap of a VM that no longer runs")
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(tap = %name, "removing a leftover tap: {e}"),
        }
    }
}

/// Forever: every [`MONITOR_INTERVAL`], [`tick`].
pub async fn monitor(app: std::sync::Arc<App>) {
    loop {
        tokio::time::sleep(MONITOR_INTERVAL).await;
        tick(&app).await;
    }
}

/// One round of the monitor: cap the console log of every VM whose VMM may run
/// (booting ones too: a guest can flood its console during boot), then settle
/// running VMs. VMs busy in another operation are not settled (their operation
/// owns them); their console is still capped, which touches only the log.
pub async fn tick(app: &App) {
    let Ok(vms) = app.db(|s| s.list_vms()) else {
        return;
    };
    for rec in &vms {
        if matches!(rec.state, VmState::Running | VmState::Creating) {
            cap_console(app, rec);
        }
    }
    for rec in vms.into_iter().filter(|r| r.state == VmState::Running) {
        let lock = app.vm_lock(rec.name.as_str());
        let Ok(_guard) = lock.try_lock() else {
            continue;
        };
        if let Ok(now) = app.db(|s| s.get_vm(&rec.id)) {
            settle(app, &now).await;
        }
    }
}

/// Rotate the VM's console log once it passes [`banger_vmm::console::ROTATE_AT`]
/// (the runtime directory is tmpfs, memory, when banger runs as root), and mark
/// how long it is now ([`banger_vmm::console_marks`]).
fn cap_console(app: &App, rec: &VmRecord) {
    use banger_vmm::console;
    let log = app.layout.vm_runtime(&rec.id).join(banger_vmm::CONSOLE_LOG);
    match console::rotate(&log, console::ROTATE_AT) {
        Ok(true) => {
            tracing::info!(vm = %rec.name, "console log rotated (kept its last {} MiB as {})", console::ROTATE_AT >> 20, console::previous(&log).display())
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(vm = %rec.name, "rotating the console log {}: {e}", log.display()),
    }
    // When its bytes were written, for `vm logs --since`.
    if let Err(e) = banger_vmm::console_marks::sample(&log, console::now_secs()) {
        tracing::debug!(vm = %rec.name, "marking the console log {}: {e}", log.display());
    }
}
