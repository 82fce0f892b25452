//! VM service: create (reserve, then start as a list of named, timed steps with undo),
//! delete, list, show, ssh access, and reconciliation after a daemon restart.

use crate::app::App;
use crate::handles::{self, VmHandles};
use crate::images;
use banger_helper::PrivOp;
use banger_image::files as img_files;
use banger_model::{GuestNet, ImageRecord, VmName, VmRecord, VmState};
use banger_rpc::{ProgressSink, RpcError, SshInfo, StageTiming, VmCreateParams, VmInfo};
use banger_store::ReserveVm;
use banger_vmm::{DiskSpec, MachineSpec, NetSpec, Qemu, Vmm};
use std::path::Path;
use std::time::{Duration, Instant};

/// Per-VM file names in the state directory.
pub mod files {
    /// Upper layer of the guest's /.
    pub const OVERLAY: &str = "overlay.ext4";
    /// The guest's /root.
    pub const WORK: &str = "work.ext4";
    /// Pinned guest host key.
    pub const KNOWN_HOSTS: &str = "known_hosts";
}

/// Something to undo if a later start step fails.
enum Undo {
    RemoveDir(std::path::PathBuf),
    DeleteTap(String),
    KillVmm(banger_vmm::Handles),
}

/// Records stage timings, reports progress, logs each stage.
struct Stages<'a> {
    vm: String,
    progress: &'a ProgressSink,
    timings: Vec<StageTiming>,
    current: Option<(String, Instant)>,
}

impl<'a> Stages<'a> {
    fn new(vm: &str, progress: &'a ProgressSink) -> Self {
        Self {
            vm: vm.to_string(),
            progress,
            timings: vec![],
            current: None,
        }
    }
    fn begin(&mut self, stage: &str) {
        self.end();
        self.progress.stage(stage);
        self.current = Some((stage.to_string(), Instant::now()));
    }
    fn end(&mut self) {
        if let Some((stage, t)) = self.current.take() {
            let ms = t.elapsed().as_millis() as u64;
            tracing::info!(vm = %self.vm, stage = %stage, ms, "stage done");
            self.timings.push(StageTiming { stage, ms });
        }
    }
}

fn op_failed(what: impl std::fmt::Display) -> RpcError {
    RpcError::operation_failed(what.to_string())
}

fn generated_name() -> VmName {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0xffff);
    VmName::parse(&format!("vm-{n:04x}")).unwrap_or_else(|_| unreachable_name())
}

fn unreachable_name() -> VmName {
    // "vm-0000" is a valid name; parse cannot fail for it.
    VmName::parse("vm-0000").unwrap_or_else(|_| std::process::abort())
}

/// The QEMU backend, probing the accelerator on first use with `image`'s kernel.
async fn backend(app: &App, image_dir: &Path, progress: &ProgressSink) -> Result<Qemu, RpcError> {
    let (q, choice) = app
        .qemu
        .get_or_init(|| async {
            let scratch = app.layout.runtime.clone();
            let _ = std::fs::create_dir_all(&scratch);
            let choice = banger_vmm::accel::choose(
                &app.config.qemu,
                &image_dir.join(img_files::KERNEL),
                &image_dir.join(img_files::INITRD),
                &scratch,
                Some(&app.layout.runtime.join("accel.json")),
                app.config.accel,
            )
            .await;
            tracing::info!(accel = choice.accel.as_str(), reason = %choice.reason, "accelerator chosen");
            let tsc_khz = banger_vmm::tsc::measure_khz(Duration::from_millis(100));
            (Qemu { binary: app.config.qemu.clone(), accel: choice.accel, tsc_khz }, choice)
        })
        .await;
    if choice.accel == banger_vmm::Accel::Tcg {
        progress.send("accel", Some(choice.reason.clone()));
    }
    Ok(q.clone())
}

/// `vm.create`: reserve, prepare and boot a VM; returns once ssh answers.
pub async fn create(
    app: &App,
    p: VmCreateParams,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let cpus = p.cpus.unwrap_or(app.config.default_cpus);
    let memory_mib = p.memory_mib.unwrap_or(app.config.default_memory_mib);
    let disk_mib = p.disk_mib.unwrap_or(app.config.default_disk_mib);
    if !(1..=64).contains(&cpus) {
        return Err(RpcError::bad_request(format!(
            "--cpus {cpus} is out of range (1 to 64)"
        )));
    }
    if !(128..=1024 * 1024).contains(&memory_mib) {
        return Err(RpcError::bad_request(format!(
            "--memory {memory_mib}M is out of range (128M to 1T)"
        )));
    }
    if !(256..=16 * 1024 * 1024).contains(&disk_mib) {
        return Err(RpcError::bad_request(format!(
            "--disk {disk_mib}M is out of range (256M to 16T)"
        )));
    }
    let name = p.name.unwrap_or_else(generated_name);
    let lock = app.vm_lock(name.as_str());
    let _guard = lock.lock().await;

    let mut st = Stages::new(name.as_str(), progress);
    let image_name = p
        .image
        .unwrap_or_else(|| banger_model::DEFAULT_IMAGE.to_string());
    if app.db(|s| s.get_vm_by_name(name.as_str())).is_ok() {
        return Err(RpcError::already_exists(format!(
            "a VM named {name} already exists (see banger vm list)"
        )));
    }
    let image = images::resolve(app, &image_name, progress).await?;

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
        })
    })?;
    match start(app, &rec, &image, &mut st).await {
        Ok(()) => {
            st.end();
            app.db(|s| s.set_vm_state(&rec.id, VmState::Running, None))?;
            let mut info = info_for(app, &app.db(|s| s.get_vm(&rec.id))?);
            info.timings = st.timings;
            let total: u64 = info.timings.iter().map(|t| t.ms).sum();
            tracing::info!(vm = %name, total_ms = total, "vm running");
            Ok(info)
        }
        Err(e) => {
            st.end();
            let _ = app.db(|s| s.set_vm_state(&rec.id, VmState::Error, Some(&e.message)));
            Err(e)
        }
    }
}

/// Start a reserved or stopped VM. On failure every step that ran is undone.
async fn start(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    st: &mut Stages<'_>,
) -> Result<(), RpcError> {
    let mut undo: Vec<Undo> = vec![];
    let r = start_steps(app, rec, image, st, &mut undo).await;
    if r.is_err() {
        for u in undo.into_iter().rev() {
            match u {
                Undo::RemoveDir(d) => {
                    let _ = std::fs::remove_dir_all(d);
                }
                Undo::DeleteTap(t) => {
                    let _ = app.privileged.run(PrivOp::DeleteTap { name: t }).await;
                }
                Undo::KillVmm(h) => {
                    if let Some((q, _)) = app.qemu.get() {
                        let _ = q.kill(&h).await;
                    }
                }
            }
        }
    }
    r
}

async fn start_steps(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    st: &mut Stages<'_>,
    undo: &mut Vec<Undo>,
) -> Result<(), RpcError> {
    let image_dir = app.layout.image_dir(&image.id);
    let vm_dir = app.layout.vm_dir(&rec.id);
    let rt_dir = app.layout.vm_runtime(&rec.id);

    st.begin("disks");
    std::fs::create_dir_all(&vm_dir)
        .map_err(|e| op_failed(format!("create {}: {e}", vm_dir.display())))?;
    undo.push(Undo::RemoveDir(vm_dir.clone()));
    let (overlay, work) = (vm_dir.join(files::OVERLAY), vm_dir.join(files::WORK));
    let seed = image_dir.join(img_files::WORK_SEED);
    let key = app.public_key.clone();
    let disk_mib = rec.disk_mib;
    let (o, w) = (overlay.clone(), work.clone());
    tokio::task::spawn_blocking(move || -> Result<(), banger_image::ext4::Ext4Error> {
        banger_image::create_overlay_disk(&o, banger_image::disks::OVERLAY_MIB)?;
        banger_image::create_work_disk(&w, disk_mib, Some(&seed), &key)
    })
    .await
    .map_err(op_failed)?
    .map_err(|e| op_failed(format!("preparing disks failed: {e}")))?;

    st.begin("network");
    let subnet = app.config.subnet;
    let bridge = app.config.bridge.clone();
    app.privileged
        .run(PrivOp::EnsureBridge {
            name: bridge.clone(),
            gateway: subnet.gateway(),
            prefix: subnet.prefix,
        })
        .await
        .map_err(|e| op_failed(format!("setting up bridge {bridge} failed: {e}")))?;
    let tap = banger_host::tap_name(&rec.id);
    app.privileged
        .run(PrivOp::CreateTap {
            name: tap.clone(),
            bridge: bridge.clone(),
            owner_uid: None,
        })
        .await
        .map_err(|e| op_failed(format!("creating tap {tap} failed: {e}")))?;
    undo.push(Undo::DeleteTap(tap.clone()));

    if app.qemu.get().is_none() {
        // Once per daemon: decide KVM vs TCG by booting the kernel (cached per host boot).
        st.begin("accel-probe");
    }
    let q = backend(app, &image_dir, st.progress).await?;
    st.begin("boot");
    std::fs::create_dir_all(&rt_dir)
        .map_err(|e| op_failed(format!("create {}: {e}", rt_dir.display())))?;
    undo.push(Undo::RemoveDir(rt_dir.clone()));
    let net = GuestNet {
        ip: rec.ip,
        prefix: subnet.prefix,
        gateway: subnet.gateway(),
    };
    let spec = MachineSpec {
        id: rec.id.clone(),
        cpus: rec.cpus,
        memory_mib: rec.memory_mib,
        kernel: image_dir.join(img_files::KERNEL),
        initrd: Some(image_dir.join(img_files::INITRD)),
        cmdline: format!(
            "banger.ip={}/{} banger.gw={} banger.hostname={}",
            net.ip, net.prefix, net.gateway, rec.name
        ),
        disks: vec![
            DiskSpec {
                path: image_dir.join(img_files::ROOTFS),
                read_only: true,
            },
            DiskSpec {
                path: overlay,
                read_only: false,
            },
            DiskSpec {
                path: work,
                read_only: false,
            },
        ],
        net: Some(NetSpec {
            tap: tap.clone(),
            mac: net.mac(),
        }),
        runtime_dir: rt_dir.clone(),
    };
    let h = q
        .launch(&spec)
        .await
        .map_err(|e| op_failed(format!("starting the VM failed: {e}")))?;
    undo.push(Undo::KillVmm(h.clone()));
    handles::write(
        &vm_dir,
        &VmHandles {
            vmm: h.clone(),
            tap,
        },
    )
    .map_err(|e| op_failed(format!("recording VM handles failed: {e}")))?;

    let deadline = Instant::now() + app.config.boot_timeout;
    st.begin("agent");
    wait_guest(
        &q,
        &h,
        &rec.id,
        deadline,
        banger_guest::agent::wait_ready(&h.agent_socket, app.config.boot_timeout),
    )
    .await
    .map_err(|e| op_failed(format!("the guest agent never answered: {e}")))?;
    st.begin("ssh");
    wait_guest(
        &q,
        &h,
        &rec.id,
        deadline,
        banger_guest::ssh::wait_sshd(rec.ip, app.config.boot_timeout),
    )
    .await
    .map_err(|e| op_failed(format!("sshd in the guest never answered: {e}")))?;
    Ok(())
}

/// Wait for `fut`, failing early (with the console's last lines) if the VMM dies.
async fn wait_guest<T, E: std::fmt::Display>(
    q: &Qemu,
    h: &banger_vmm::Handles,
    id: &str,
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r.map_err(|e| format!("{e}{}", console_tail(&h.console_log))),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if !q.is_alive(h, id) {
                    return Err(format!("the VM exited during boot{}", console_tail(&h.console_log)));
                }
                if Instant::now() > deadline {
                    return Err(format!("timed out{}", console_tail(&h.console_log)));
                }
            }
        }
    }
}

fn console_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
    format!("; last console lines ({}):\n  {tail}", log.display())
}

/// The user-facing view of a record, with live facts.
pub fn info_for(app: &App, rec: &VmRecord) -> VmInfo {
    let image = app
        .db(|s| s.get_image(&rec.image_id))
        .map(|i| i.name)
        .unwrap_or_else(|_| rec.image_id.clone());
    let mut info = VmInfo::from_record(rec, &image);
    if let Some(h) = handles::read(&app.layout.vm_dir(&rec.id)) {
        if banger_vmm::process::alive_with_tag(
            h.vmm.pid,
            &h.vmm.control_socket.display().to_string(),
        ) {
            info.pid = Some(h.vmm.pid);
        }
    }
    info
}

/// `vm.list`.
pub fn list(app: &App) -> Result<Vec<VmInfo>, RpcError> {
    Ok(app
        .db(|s| s.list_vms())?
        .iter()
        .map(|r| info_for(app, r))
        .collect())
}

/// `vm.show`.
pub fn show(app: &App, name: &str) -> Result<VmInfo, RpcError> {
    Ok(info_for(app, &app.db(|s| s.get_vm_by_name(name))?))
}

/// `vm.ssh_info`: only for running VMs.
pub fn ssh_info(app: &App, name: &str) -> Result<SshInfo, RpcError> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if rec.state != VmState::Running {
        return Err(RpcError::bad_request(format!(
            "VM {name} is {}, not running (see banger vm show {name})",
            rec.state.as_str()
        )));
    }
    Ok(SshInfo {
        name: rec.name.to_string(),
        ip: rec.ip,
        user: "root".into(),
        key_path: app.layout.ssh_key(),
        known_hosts_path: app.layout.vm_dir(&rec.id).join(files::KNOWN_HOSTS),
    })
}

/// Tear down everything a VM has on the host except its record: VMM, tap, runtime dir.
async fn teardown_runtime(app: &App, rec: &VmRecord) -> Result<(), RpcError> {
    let vm_dir = app.layout.vm_dir(&rec.id);
    if let Some(h) = handles::read(&vm_dir) {
        let q = Qemu {
            binary: app.config.qemu.clone(),
            accel: h.vmm.accel,
            tsc_khz: 0,
        };
        q.kill(&h.vmm)
            .await
            .map_err(|e| op_failed(format!("stopping VM {} failed: {e}", rec.name)))?;
    }
    app.privileged
        .run(PrivOp::DeleteTap {
            name: banger_host::tap_name(&rec.id),
        })
        .await
        .map_err(|e| op_failed(format!("removing the tap of VM {} failed: {e}", rec.name)))?;
    let _ = std::fs::remove_dir_all(app.layout.vm_runtime(&rec.id));
    handles::remove(&vm_dir);
    Ok(())
}

/// `vm.delete`: the VMM, tap, disks, runtime files and the row. Irreversible.
pub async fn delete(app: &App, name: &str) -> Result<(), RpcError> {
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    teardown_runtime(app, &rec).await?;
    let dir = app.layout.vm_dir(&rec.id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| op_failed(format!("removing {} failed: {e}", dir.display())))?;
    }
    app.db(|s| s.delete_vm(&rec.id))?;
    tracing::info!(vm = %name, "vm deleted");
    Ok(())
}

/// On daemon start: VMs whose VMM still runs stay running (re-adopted); the others
/// lose their tap and runtime files and are marked stopped (or error if they were
/// half-created when the previous daemon died).
pub async fn reconcile(app: &App) {
    let Ok(vms) = app.db(|s| s.list_vms()) else {
        return;
    };
    for rec in vms {
        if !matches!(rec.state, VmState::Running | VmState::Creating) {
            continue;
        }
        let alive = handles::read(&app.layout.vm_dir(&rec.id))
            .map(|h| {
                banger_vmm::process::alive_with_tag(
                    h.vmm.pid,
                    &h.vmm.control_socket.display().to_string(),
                )
            })
            .unwrap_or(false);
        if alive && rec.state == VmState::Running {
            tracing::info!(vm = %rec.name, "re-adopted running VM");
            continue;
        }
        let _ = teardown_runtime(app, &rec).await;
        let (state, err) = match rec.state {
            VmState::Creating => (
                VmState::Error,
                Some("bangerd stopped while the VM was being created"),
            ),
            _ => (VmState::Stopped, None),
        };
        let _ = app.db(|s| s.set_vm_state(&rec.id, state, err));
        tracing::info!(vm = %rec.name, state = state.as_str(), "reconciled VM whose VMM is gone");
    }
}
