//! VM service: create (reserve, then start as a list of named, timed steps with undo),
//! start, stop, restart, kill, delete, prune, set, logs, stats, ssh access, and keeping
//! records true to reality (reconcile on start, a liveness monitor while running).

use crate::app::App;
use crate::handles::{self, VmHandles};
use crate::images;
use banger_guest::agent::Channel;
use banger_helper::PrivOp;
use banger_image::files as img_files;
use banger_model::VmmChoice;
use banger_model::{GuestNet, ImageRecord, VmName, VmRecord, VmState};
use banger_rpc::{
    ProgressSink, PruneResult, RpcError, SshInfo, StageTiming, VmCreateParams, VmDeleteParams,
    VmInfo, VmLogsParams, VmLogsResult, VmPorts, VmSetParams, VmStats, WorkspaceParams,
};
use banger_store::ReserveVm;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::qemu::files as vmm_files;
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
    RemoveFile(std::path::PathBuf),
    KillVmm(banger_vmm::Handles),
}

/// Records stage timings, reports progress and the operation's stage, logs each stage.
struct Stages<'a> {
    vm: String,
    progress: &'a ProgressSink,
    op: Option<(&'a crate::app::Operations, String)>,
    timings: Vec<StageTiming>,
    current: Option<(String, Instant)>,
}

impl<'a> Stages<'a> {
    fn new(
        vm: &str,
        progress: &'a ProgressSink,
        op: Option<(&'a crate::app::Operations, String)>,
    ) -> Self {
        Self {
            vm: vm.to_string(),
            progress,
            op,
            timings: vec![],
            current: None,
        }
    }
    fn begin(&mut self, stage: &str) {
        self.end();
        self.progress.stage(stage);
        if let Some((ops, id)) = &self.op {
            ops.stage(id, stage);
        }
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

fn generated_name() -> Result<VmName, RpcError> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    VmName::parse(&format!("vm-{n:04x}")).map_err(op_failed)
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
                Some(&app.layout.accel_cache()),
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

fn check_sizes(cpus: u32, memory_mib: u64, disk_mib: u64) -> Result<(), RpcError> {
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
    Ok(())
}

/// `vm.create`: reserve, prepare and boot a VM; returns once ssh answers.
pub async fn create(
    app: &App,
    op_id: &str,
    p: VmCreateParams,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let cpus = p.cpus.unwrap_or(app.config.default_cpus);
    let memory_mib = p.memory_mib.unwrap_or(app.config.default_memory_mib);
    let disk_mib = p.disk_mib.unwrap_or(app.config.default_disk_mib);
    check_sizes(cpus, memory_mib, disk_mib)?;
    let name = match p.name {
        Some(n) => n,
        None => generated_name()?,
    };
    let _op = app.ops.begin(op_id, "vm.create", name.as_str());
    let lock = app.vm_lock(name.as_str());
    let _guard = lock.lock().await;

    let mut st = Stages::new(name.as_str(), progress, Some((&app.ops, op_id.to_string())));
    let image_name = p
        .image
        .unwrap_or_else(|| banger_model::DEFAULT_IMAGE.to_string());
    if app.db(|s| s.get_vm_by_name(name.as_str())).is_ok() {
        return Err(RpcError::already_exists(format!(
            "a VM named {name} already exists (see banger vm list)"
        )));
    }
    let image = images::resolve(app, &image_name, progress).await?;
    let vmm = p.vmm.unwrap_or(app.config.vmm);
    if vmm == VmmChoice::Firecracker {
        // An explicit backend that cannot run here is refused before anything exists.
        choose_backend(app, vmm, &app.layout.image_dir(&image.id), progress).await?;
    }

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
        })
    })?;
    if p.no_start {
        st.end();
        app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
        let mut info = info_for(app, &app.db(|s| s.get_vm(&rec.id))?);
        info.timings = st.timings;
        return Ok(info);
    }
    boot_recorded(app, &rec, &image, st).await
}

/// Start `rec` and record the outcome: `running`, or `error` with the reason.
async fn boot_recorded(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    mut st: Stages<'_>,
) -> Result<VmInfo, RpcError> {
    match start(app, rec, image, &mut st).await {
        Ok(()) => {
            st.end();
            app.db(|s| s.set_vm_state(&rec.id, VmState::Running, None))?;
            let mut info = info_for(app, &app.db(|s| s.get_vm(&rec.id))?);
            info.timings = st.timings;
            let total: u64 = info.timings.iter().map(|t| t.ms).sum();
            tracing::info!(vm = %rec.name, total_ms = total, "vm running");
            Ok(info)
        }
        Err(e) => {
            st.end();
            let _ = app.db(|s| s.set_vm_state(&rec.id, VmState::Error, Some(&e.message)));
            Err(e)
        }
    }
}

/// `vm.start`: boot a stopped (or failed) VM with its existing disks.
pub async fn start_vm(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let _op = app.ops.begin(op_id, "vm.start", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    start_locked(app, op_id, name, progress).await
}

async fn start_locked(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if rec.state == VmState::Running {
        return Ok(info_for(app, &rec));
    }
    let image = app.db(|s| s.get_image(&rec.image_id)).map_err(|_| {
        RpcError::operation_failed(format!(
            "the image of VM {name} is gone; it cannot boot again (delete it with banger vm delete {name})"
        ))
    })?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Creating, None))?;
    let st = Stages::new(name, progress, Some((&app.ops, op_id.to_string())));
    boot_recorded(app, &rec, &image, st).await
}

/// Start a reserved or stopped VM. On failure every step that ran is undone, and
/// disks that existed before (a stopped VM's data) are never touched.
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
                Undo::RemoveFile(f) => {
                    let _ = std::fs::remove_file(f);
                }
                Undo::DeleteTap(t) => {
                    let _ = app.privileged.run(PrivOp::DeleteTap { name: t }).await;
                }
                Undo::KillVmm(h) => {
                    let _ = vmm_for(app, &h).kill(&h).await;
                    handles::remove(&app.layout.vm_dir(&rec.id));
                }
            }
        }
    }
    r
}

fn inject(app: &App, stage: &str) -> Result<(), RpcError> {
    if app.config.fail_at.as_deref() == Some(stage) {
        return Err(op_failed(format!(
            "injected failure at stage {stage} (BANGER_FAIL_AT)"
        )));
    }
    Ok(())
}

/// A backend good enough to stop or watch a VM launched by any earlier daemon: the
/// one named in its handles.
fn vmm_for(app: &App, h: &banger_vmm::Handles) -> Box<dyn Vmm> {
    if h.backend == "firecracker" {
        Box::new(Firecracker {
            binary: app.config.firecracker.clone(),
            ..Firecracker::default()
        })
    } else {
        Box::new(Qemu {
            binary: app.config.qemu.clone(),
            accel: h.accel,
            tsc_khz: 0,
        })
    }
}

/// Whether Firecracker can run guests here, and if not, why (for errors and `auto`).
fn firecracker_usable(app: &App, accel: banger_vmm::Accel) -> Result<(), String> {
    use banger_hostcheck::firecracker;
    let probe = firecracker::probe(&app.config.firecracker);
    firecracker::usable(&probe, Some(accel))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Outbound NAT for the guest subnet, once per daemon. A failure (no nft, a host
/// firewall banger cannot change) costs guests their way out, not their start: the
/// VM still boots and reaches the host, and the reason is shown once.
async fn ensure_nat(app: &App, bridge: &str, progress: &ProgressSink) {
    use std::sync::atomic::Ordering;
    if !app.config.nat || app.nat_ready.load(Ordering::Relaxed) {
        return;
    }
    let op = PrivOp::EnableNat {
        bridge: bridge.to_string(),
        subnet: app.config.subnet,
    };
    match app.privileged.run(op).await {
        Ok(_) => {
            app.nat_ready.store(true, Ordering::Relaxed);
            tracing::info!(bridge, subnet = %app.config.subnet, "outbound NAT enabled");
        }
        Err(e) => {
            tracing::warn!("outbound NAT could not be enabled: {e}");
            progress.send(
                "network",
                Some(format!(
                    "outbound NAT could not be enabled ({e}); guests reach only the host (set BANGER_NAT=off to stop trying, run banger doctor)"
                )),
            );
        }
    }
}

/// The backend for a VM and the kernel file it boots: Firecracker (ELF vmlinux,
/// extracted once beside the image's bzImage) or QEMU (the bzImage).
pub(crate) async fn choose_backend(
    app: &App,
    choice: VmmChoice,
    image_dir: &Path,
    progress: &ProgressSink,
) -> Result<(Box<dyn Vmm>, std::path::PathBuf), RpcError> {
    let q = backend(app, image_dir, progress).await?;
    let firecracker = match choice {
        VmmChoice::Qemu => false,
        VmmChoice::Auto => firecracker_usable(app, q.accel).is_ok(),
        VmmChoice::Firecracker => {
            firecracker_usable(app, q.accel).map_err(|why| {
                RpcError::bad_request(format!(
                    "--vmm firecracker cannot be used here: {why}; use --vmm qemu or --vmm auto"
                ))
            })?;
            true
        }
    };
    if !firecracker {
        return Ok((Box::new(q), image_dir.join(img_files::KERNEL)));
    }
    let bz = image_dir.join(img_files::KERNEL);
    let vmlinux = tokio::task::spawn_blocking(move || banger_image::vmlinux::vmlinux_path(&bz))
        .await
        .map_err(op_failed)?
        .map_err(|e| op_failed(format!("extracting the kernel for Firecracker failed: {e}")))?;
    let fc = Firecracker {
        binary: app.config.firecracker.clone(),
        ..Firecracker::default()
    };
    Ok((Box::new(fc), vmlinux))
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
    if !vm_dir.exists() {
        std::fs::create_dir_all(&vm_dir)
            .map_err(|e| op_failed(format!("create {}: {e}", vm_dir.display())))?;
        undo.push(Undo::RemoveDir(vm_dir.clone()));
    }
    let (overlay, work) = (vm_dir.join(files::OVERLAY), vm_dir.join(files::WORK));
    if !overlay.exists() {
        // A new upper layer means a new guest host key: forget the pinned one.
        let _ = std::fs::remove_file(vm_dir.join(files::KNOWN_HOSTS));
        let o = overlay.clone();
        tokio::task::spawn_blocking(move || {
            banger_image::create_overlay_disk(&o, banger_image::disks::OVERLAY_MIB)
        })
        .await
        .map_err(op_failed)?
        .map_err(|e| op_failed(format!("creating the overlay disk failed: {e}")))?;
        undo.push(Undo::RemoveFile(overlay.clone()));
    }
    if !work.exists() {
        let (w, seed, key, mib) = (
            work.clone(),
            image_dir.join(img_files::WORK_SEED),
            app.public_key.clone(),
            rec.disk_mib,
        );
        tokio::task::spawn_blocking(move || {
            banger_image::create_work_disk(&w, mib, Some(&seed), &key)
        })
        .await
        .map_err(op_failed)?
        .map_err(|e| op_failed(format!("creating the work disk failed: {e}")))?;
        undo.push(Undo::RemoveFile(work.clone()));
    }
    inject(app, "disks")?;

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
    ensure_nat(app, &bridge, st.progress).await;
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
    inject(app, "network")?;

    if app.qemu.get().is_none() {
        // Once per daemon: decide KVM vs TCG by booting the kernel (cached per host boot).
        st.begin("accel-probe");
    }
    let (q, kernel) = choose_backend(app, rec.vmm, &image_dir, st.progress).await?;
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
        kernel,
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
    inject(app, "boot")?;

    let deadline = Instant::now() + app.config.boot_timeout;
    st.begin("agent");
    wait_guest(
        q.as_ref(),
        &h,
        &rec.id,
        deadline,
        banger_guest::agent::wait_ready_on(
            Channel::for_backend(&h.backend, &h.agent_socket),
            app.config.boot_timeout,
        ),
    )
    .await
    .map_err(|e| op_failed(format!("the guest agent never answered: {e}")))?;
    inject(app, "agent")?;
    st.begin("ssh");
    wait_guest(
        q.as_ref(),
        &h,
        &rec.id,
        deadline,
        banger_guest::ssh::wait_sshd(rec.ip, app.config.boot_timeout),
    )
    .await
    .map_err(|e| op_failed(format!("sshd in the guest never answered: {e}")))?;
    inject(app, "ssh")?;
    Ok(())
}

/// Wait for `fut`, failing early (with the console's last lines) if the VMM dies.
async fn wait_guest<T, E: std::fmt::Display>(
    q: &dyn Vmm,
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
    info.workspace = app.db(|s| s.get_workspace(&rec.id)).ok().flatten();
    if let Some(h) = handles::read(&app.layout.vm_dir(&rec.id)) {
        if banger_vmm::process::alive_with_tag(
            h.vmm.pid,
            &h.vmm.control_socket.display().to_string(),
        ) {
            info.pid = Some(h.vmm.pid);
            info.backend = Some(h.vmm.backend.clone());
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

/// `vm.ports`: TCP ports listening in the guest, as its agent sees them.
pub async fn ports(app: &App, name: &str) -> Result<VmPorts, RpcError> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    let h = handles::read(&app.layout.vm_dir(&rec.id))
        .filter(|_| rec.state == VmState::Running)
        .ok_or_else(|| {
            RpcError::bad_request(format!(
                "VM {name} is {}, not running (start it with banger vm start {name})",
                rec.state.as_str()
            ))
        })?;
    let v = banger_guest::agent::request_on(
        Channel::for_backend(&h.vmm.backend, &h.vmm.agent_socket),
        "ports",
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| {
        op_failed(format!(
            "asking the guest agent of {name} for its ports failed: {e}"
        ))
    })?;
    let ports = v["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                .collect()
        })
        .unwrap_or_default();
    Ok(VmPorts {
        name: rec.name.to_string(),
        ip: rec.ip,
        ports,
    })
}

/// `vm.workspace_record`: remember the repository the CLI shipped into a VM.
pub async fn record_workspace(app: &App, p: WorkspaceParams) -> Result<VmInfo, RpcError> {
    let ws = &p.workspace;
    // The same rule the CLI applied before shipping; re-checked because any client may call.
    match banger_workspace::guest_path("", Some(&ws.guest_path)) {
        Ok(p) if p == ws.guest_path => {}
        _ => {
            return Err(RpcError::bad_request(format!(
                "workspace path {:?} must be inside /root (the VM's work disk)",
                ws.guest_path
            )))
        }
    }
    if ws.head.len() < 7 || !ws.head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RpcError::bad_request(format!(
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
        control_path: Some(app.layout.vm_runtime(&rec.id).join("ssh.ctl")),
    })
}

/// Tear down what a VM has on the host besides its record and disks: the VMM (killed),
/// the tap, sockets and the handles file. The console log stays for `vm logs`.
async fn teardown_runtime(app: &App, rec: &VmRecord) -> Result<(), RpcError> {
    let vm_dir = app.layout.vm_dir(&rec.id);
    if let Some(h) = handles::read(&vm_dir) {
        vmm_for(app, &h.vmm)
            .kill(&h.vmm)
            .await
            .map_err(|e| op_failed(format!("stopping VM {} failed: {e}", rec.name)))?;
    }
    app.privileged
        .run(PrivOp::DeleteTap {
            name: banger_host::tap_name(&rec.id),
        })
        .await
        .map_err(|e| op_failed(format!("removing the tap of VM {} failed: {e}", rec.name)))?;
    let rt = app.layout.vm_runtime(&rec.id);
    for f in [vmm_files::QMP, vmm_files::AGENT, vmm_files::PID] {
        let _ = std::fs::remove_file(rt.join(f));
    }
    handles::remove(&vm_dir);
    Ok(())
}

/// `vm.delete`: the VMM, tap, disks, runtime files and the row. Irreversible.
/// A running VM is refused unless `force`; with `created_op`, only the VM that call
/// created is deleted (a same-named older VM is left alone).
pub async fn delete(app: &App, p: VmDeleteParams) -> Result<(), RpcError> {
    let name = p.name.as_str();
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if let Some(op) = &p.created_op {
        if rec.created_op.as_deref() != Some(op.as_str()) {
            return Err(RpcError::not_found(format!(
                "VM {name} was not created by operation {op}; it is left as it is"
            )));
        }
    }
    if !p.force && rec.state == VmState::Running {
        return Err(RpcError::bad_request(format!(
            "VM {name} is running; stop it first (banger vm stop {name}) or delete it anyway with banger vm delete -f {name}"
        )));
    }
    delete_locked(app, &rec).await
}

async fn delete_locked(app: &App, rec: &VmRecord) -> Result<(), RpcError> {
    teardown_runtime(app, rec).await?;
    for dir in [app.layout.vm_dir(&rec.id), app.layout.vm_runtime(&rec.id)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| op_failed(format!("removing {} failed: {e}", dir.display())))?;
        }
    }
    app.db(|s| s.delete_vm(&rec.id))?;
    tracing::info!(vm = %rec.name, "vm deleted");
    Ok(())
}

/// How long a guest gets to power off after being asked before it is forced off.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// `vm.stop`: flush the guest's filesystems and power it off cleanly, forcing it off
/// only if it does not go within [`POWEROFF_GRACE`].
pub async fn stop(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let _op = app.ops.begin(op_id, "vm.stop", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let mut st = Stages::new(name, progress, Some((&app.ops, op_id.to_string())));
    stop_locked(app, name, &mut st).await?;
    st.end();
    let mut info = show(app, name)?;
    info.timings = st.timings;
    Ok(info)
}

async fn stop_locked(app: &App, name: &str, st: &mut Stages<'_>) -> Result<(), RpcError> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if let Some(h) = handles::read(&app.layout.vm_dir(&rec.id)) {
        let q = vmm_for(app, &h.vmm);
        if q.is_alive(&h.vmm, &rec.id) {
            st.begin("sync");
            let asked = banger_guest::agent::request_on(
                Channel::for_backend(&h.vmm.backend, &h.vmm.agent_socket),
                "shutdown",
                Duration::from_secs(5),
            )
            .await;
            if let Err(e) = asked {
                tracing::warn!(vm = %name, error = %e, "agent shutdown failed; asking over ssh");
                ssh_poweroff(app, &rec).await;
            }
            st.begin("poweroff");
            let tag = h.vmm.control_socket.display().to_string();
            if !banger_vmm::process::wait_exit(h.vmm.pid, &tag, POWEROFF_GRACE).await {
                tracing::warn!(vm = %name, "guest did not power off in time; forcing it off");
                st.begin("force-off");
            }
        }
    }
    st.begin("cleanup");
    teardown_runtime(app, &rec).await?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
    Ok(())
}

/// Fallback when the agent cannot be reached: `sync; poweroff` over ssh (bounded).
async fn ssh_poweroff(app: &App, rec: &VmRecord) {
    let known = app.layout.vm_dir(&rec.id).join(files::KNOWN_HOSTS);
    let mut c = tokio::process::Command::new("ssh");
    c.args(banger_guest::ssh::ssh_options(
        &app.layout.ssh_key(),
        &known,
        &format!("banger-{}", rec.name),
    ))
    .arg(format!("root@{}", rec.ip))
    .arg("sync; systemctl poweroff --no-block || poweroff")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), c.output()).await;
}

/// `vm.kill`: force the VM off now. The guest gets no chance to flush.
pub async fn kill(app: &App, name: &str) -> Result<VmInfo, RpcError> {
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    teardown_runtime(app, &rec).await?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Stopped, None))?;
    show(app, name)
}

/// `vm.restart`: stop then start under one lock.
pub async fn restart(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo, RpcError> {
    let _op = app.ops.begin(op_id, "vm.restart", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    let mut st = Stages::new(name, progress, Some((&app.ops, op_id.to_string())));
    stop_locked(app, name, &mut st).await?;
    st.end();
    start_locked(app, op_id, name, progress).await
}

/// `vm.prune`: delete every VM that is stopped or failed. Running and in-flight VMs stay.
pub async fn prune(app: &App) -> Result<PruneResult, RpcError> {
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

/// `vm.set`: resize a stopped VM; the work disk only grows.
pub async fn set(app: &App, p: VmSetParams) -> Result<VmInfo, RpcError> {
    let lock = app.vm_lock(&p.name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    if !matches!(rec.state, VmState::Stopped | VmState::Error) {
        return Err(RpcError::bad_request(format!(
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
        return Err(RpcError::bad_request(format!(
            "the work disk of {} can only grow (it is {}M; asked for {disk_mib}M)",
            rec.name, rec.disk_mib
        )));
    }
    let work = app.layout.vm_dir(&rec.id).join(files::WORK);
    if disk_mib > rec.disk_mib && work.exists() {
        tokio::task::spawn_blocking(move || banger_image::grow_disk(&work, disk_mib))
            .await
            .map_err(op_failed)?
            .map_err(|e| op_failed(format!("growing the work disk failed: {e}")))?;
    }
    app.db(|s| s.set_vm_resources(&rec.id, cpus, memory_mib, disk_mib))?;
    show(app, &p.name)
}

/// The most `vm.logs` returns per call.
const LOG_CHUNK: u64 = 1024 * 1024;

/// `vm.logs`: the guest console from `offset` (default: the last 64 KiB).
pub fn logs(app: &App, p: VmLogsParams) -> Result<VmLogsResult, RpcError> {
    use std::io::{Read, Seek, SeekFrom};
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    let path = app.layout.vm_runtime(&rec.id).join(vmm_files::CONSOLE);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return Ok(VmLogsResult {
            data: String::new(),
            next_offset: 0,
        });
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = p.offset.unwrap_or(len.saturating_sub(64 * 1024)).min(len);
    f.seek(SeekFrom::Start(from)).map_err(op_failed)?;
    let mut buf = vec![];
    f.take(LOG_CHUNK).read_to_end(&mut buf).map_err(op_failed)?;
    Ok(VmLogsResult {
        data: String::from_utf8_lossy(&buf).into_owned(),
        next_offset: from + buf.len() as u64,
    })
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0], utime [11], stime [12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// `vm.stats`: host-side view of a VM's CPU, memory and disk use.
pub async fn stats(app: &App, name: &str) -> Result<VmStats, RpcError> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    let vm_dir = app.layout.vm_dir(&rec.id);
    let pid = info_for(app, &rec).pid;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (mut cpu_percent, mut cpu_seconds, mut rss) = (None, None, None);
    if let Some(pid) = pid {
        let sample = Duration::from_millis(500);
        let t0 = proc_cpu_ticks(pid);
        tokio::time::sleep(sample).await;
        let t1 = proc_cpu_ticks(pid);
        if let (Some(a), Some(b)) = (t0, t1) {
            cpu_percent = Some(((b.saturating_sub(a)) as f64 / hz) / sample.as_secs_f64() * 100.0);
            cpu_seconds = Some(b as f64 / hz);
        }
        rss = proc_rss(pid);
    }
    Ok(VmStats {
        name: rec.name.to_string(),
        state: rec.state.as_str().to_string(),
        cpu_percent,
        cpu_seconds,
        rss_bytes: rss,
        memory_mib: rec.memory_mib,
        overlay_bytes: allocated(&vm_dir.join(files::OVERLAY)),
        work_bytes: allocated(&vm_dir.join(files::WORK)),
        disk_mib: rec.disk_mib,
    })
}

/// Bring one VM's record in line with reality: a `running` VM whose VMM is gone is
/// cleaned up and marked stopped; a half-created one (its daemon died) is marked error.
/// Returns true if the record changed.
async fn settle(app: &App, rec: &VmRecord) -> bool {
    if !matches!(rec.state, VmState::Running | VmState::Creating) {
        return false;
    }
    let alive = handles::read(&app.layout.vm_dir(&rec.id))
        .map(|h| vmm_for(app, &h.vmm).is_alive(&h.vmm, &rec.id))
        .unwrap_or(false);
    if alive && rec.state == VmState::Running {
        return false;
    }
    let _ = teardown_runtime(app, rec).await;
    let (state, err) = match rec.state {
        VmState::Creating => (
            VmState::Error,
            Some("bangerd stopped while the VM was being created or started"),
        ),
        _ => (VmState::Stopped, None),
    };
    let _ = app.db(|s| s.set_vm_state(&rec.id, state, err));
    tracing::warn!(vm = %rec.name, state = state.as_str(), "VM's VMM is gone (guest powered off, or it was killed); cleaned up");
    true
}

/// On daemon start: VMs whose VMM still runs stay running (re-adopted, same guest);
/// the others are cleaned up (see [`settle`]).
pub async fn reconcile(app: &App) {
    let Ok(vms) = app.db(|s| s.list_vms()) else {
        return;
    };
    for rec in vms {
        if !settle(app, &rec).await && rec.state == VmState::Running {
            tracing::info!(vm = %rec.name, "re-adopted running VM");
        }
    }
}

/// How often the monitor checks that running VMs' VMMs are alive.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(2);

/// Forever: notice VMs whose VMM exited behind our back (guest `poweroff`, OOM kill,
/// `kill -9`), remove their tap and mark them stopped. VMs busy in another operation
/// are skipped (their operation owns them).
pub async fn monitor(app: std::sync::Arc<App>) {
    loop {
        tokio::time::sleep(MONITOR_INTERVAL).await;
        let Ok(vms) = app.db(|s| s.list_vms()) else {
            continue;
        };
        for rec in vms.into_iter().filter(|r| r.state == VmState::Running) {
            let lock = app.vm_lock(rec.name.as_str());
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            if let Ok(now) = app.db(|s| s.get_vm(&rec.id)) {
                settle(&app, &now).await;
            }
        }
    }
}
