//! Read-mostly verbs: `vm.list`, `vm.show`, `vm.ssh_info`, `vm.logs`, `vm.ports`, and
//! `vm.workspace_record` (the one write: what the CLI shipped into a VM).

use super::files;
use super::userspace::running_ssh_port as rootless_ssh_port;
use crate::app::App;
use crate::error::{DaemonError, Result};
use crate::handles;
use banger_model::{VmRecord, VmState};
use banger_rpc::{SshInfo, VmInfo, VmLogsParams, VmLogsResult, VmPortsResult, WorkspaceParams};

/// The user-facing view of a record, with live facts (pid and backend while the VMM
/// runs).
pub fn info_for(app: &App, rec: &VmRecord) -> VmInfo {
    let image = app
        .db(|s| s.get_image(&rec.image_id))
        .map(|i| i.name)
        .unwrap_or_else(|_| rec.image_id.clone());
    let mut info = VmInfo::from_record(rec, &image);
    info.workspace = app.db(|s| s.get_workspace(&rec.id)).ok().flatten();
    if let Some(h) = handles::read(&app.layout.vm_dir(&rec.id)) {
        if app.backends.for_handles(&h.vmm).is_alive(&h.vmm, &rec.id) {
            info.pid = Some(h.vmm.pid);
            info.backend = Some(h.vmm.backend.clone());
        }
    }
    super::boot_record::fill(app, &mut info);
    info.ports = super::forward::load(app, &rec.id);
    info.ssh_port = rootless_ssh_port(app, rec);
    info
}

/// `vm.list`.
pub fn list(app: &App) -> Result<Vec<VmInfo>> {
    Ok(app
        .db(|s| s.list_vms())?
        .iter()
        .map(|r| info_for(app, r))
        .collect())
}

/// `vm.show`.
pub fn show(app: &App, name: &str) -> Result<VmInfo> {
    Ok(info_for(app, &app.db(|s| s.get_vm_by_name(name))?))
}

/// The one "VM is not running" error: every verb that needs a running VM says the
/// same thing and names the same next command.
pub(crate) fn not_running(name: &str, state: VmState) -> DaemonError {
    DaemonError::BadRequest(format!(
        "VM {name} is {}, not running (start it with banger vm start {name})",
        state.as_str()
    ))
}

/// `vm.ssh_info`: only for running VMs.
pub fn ssh_info(app: &App, name: &str) -> Result<SshInfo> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if rec.state != VmState::Running {
        return Err(not_running(name, rec.state));
    }
    // Rootless: the guest's sshd is reached through a loopback port its network
    // stack forwards.
    let forwarded = rootless_ssh_port(app, &rec);
    Ok(SshInfo {
        name: rec.name.to_string(),
        ip: if forwarded.is_some() {
            std::net::Ipv4Addr::LOCALHOST
        } else {
            rec.ip
        },
        port: forwarded,
        user: "root".into(),
        key_path: app.layout.ssh_key(),
        known_hosts_path: app.layout.known_hosts(),
        host_key_alias: Some(crate::ssh_files::alias(rec.name.as_str())),
        control_path: Some(app.layout.vm_runtime(&rec.id).join(files::SSH_CONTROL)),
    })
}

/// The most `vm.logs` returns per call.
const LOG_CHUNK: u64 = 1024 * 1024;
/// What `vm.logs` returns without an offset: the console's last 64 KiB.
const LOG_TAIL: u64 = 64 * 1024;

/// `vm.logs`: the guest console from `offset` (default: the last 64 KiB, across the
/// last rotation; with `since`, from the first line written since then). Offsets are in the current `console.log`; an offset past its end
/// means it was rotated since, and reading starts over at its beginning.
pub fn logs(app: &App, p: VmLogsParams) -> Result<VmLogsResult> {
    use std::io::{Read, Seek, SeekFrom};
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    let path = app.layout.vm_runtime(&rec.id).join(banger_vmm::CONSOLE_LOG);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return Ok(VmLogsResult {
            data: String::new(),
            next_offset: 0,
        });
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = p.offset.or_else(|| {
        p.since
            .map(|secs| banger_vmm::console_marks::offset_since(&path, secs))
    });
    let Some(offset) = offset else {
        let data = banger_vmm::console::tail(&path, LOG_TAIL);
        return Ok(VmLogsResult {
            data: String::from_utf8_lossy(&data).into_owned(),
            next_offset: len,
        });
    };
    let from = if offset > len { 0 } else { offset };
    f.seek(SeekFrom::Start(from))
        .map_err(DaemonError::io("reading", &path))?;
    let mut buf = vec![];
    f.take(LOG_CHUNK)
        .read_to_end(&mut buf)
        .map_err(DaemonError::io("reading", &path))?;
    Ok(VmLogsResult {
        data: String::from_utf8_lossy(&buf).into_owned(),
        next_offset: from + buf.len() as u64,
    })
}

/// `vm.ports`: TCP ports listening in the guest, as its agent sees them.
pub async fn ports(app: &App, name: &str) -> Result<VmPortsResult> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    let h = handles::read(&app.layout.vm_dir(&rec.id))
        .filter(|_| rec.state == VmState::Running)
        .ok_or_else(|| not_running(name, rec.state))?;
    let target = super::guest::Target {
        id: &rec.id,
        name: rec.name.as_str(),
        handles: &h.vmm,
    };
    let ports = app.guest.ports(target).await.map_err(DaemonError::guest(
        format!("asking the guest agent of {name} for its ports failed"),
        String::new(),
    ))?;
    Ok(VmPortsResult {
        name: rec.name.to_string(),
        ip: rec.ip,
        ports,
        forwards: super::forward::load(app, &rec.id),
        rootless: app.rootless.is_some(),
        ssh_port: rootless_ssh_port(app, &rec),
    })
}

/// `vm.workspace_record`: remember the repository the CLI shipped into a VM.
pub async fn record_workspace(app: &App, p: WorkspaceParams) -> Result<VmInfo> {
    let ws = &p.workspace;
    // The same rule the CLI applied before shipping; re-checked because any client may call.
    match banger_workspace::guest_path("", Some(&ws.guest_path)) {
        Ok(g) if g == ws.guest_path => {}
        _ => {
            return Err(DaemonError::BadRequest(format!(
                "workspace path {:?} must be inside /root (the VM's work disk)",
                ws.guest_path
            )))
        }
    }
    if ws.head.len() < 7 || !ws.head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DaemonError::BadRequest(format!(
            "{:?} is not a git commit id",
            ws.head
        )));
    }
    let lock = app.vm_lock(&p.name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    app.db(|s| s.set_workspace(&rec.id, ws))?;
    show(app, &p.name)
}
