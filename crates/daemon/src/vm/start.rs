//! `vm.start`, and the start steps shared by create, start and restart.
//!
//! The steps, each a timed stage with its undo recorded as soon as it made something:
//! `disks` (overlay and work disks, only those that do not exist yet) → `network`
//! (bridge, NAT once per daemon, the VM's tap) → `accel-probe` (only the first time
//! the daemon needs the accelerator) → `boot` (the backend launches the VMM;
//! `handles.json` records it) → `agent` (the guest's agent answers; sshd is never
//! waited for). A failure at any
//! step undoes exactly the steps before it and leaves the VM in `error` with the
//! reason; the waits fail early, with the console's last lines, if the VMM dies.

use super::files;
use super::guest::{GuestError, Target};
use super::stages::{Stages, Steps, Undo};
use super::stall::{self, StallWatch};
use super::userspace::Attachment;
use crate::app::App;
use crate::error::{blocking, DaemonError, Result};
use crate::handles::{self, VmHandles};
use crate::warm;
use banger_contract::cmdline as key;
use banger_image::files as img_files;
use banger_model::{GuestNet, ImageRecord, InitMode, VmRecord, VmState};
use banger_rpc::{ProgressSink, VmInfo};
use banger_vmm::{DiskSpec, Handles, MachineSpec, NetSpec, Vmm};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `vm.start`: boot a stopped (or failed) VM with its existing disks.
pub async fn start_vm(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo> {
    let _op = app.ops.begin(op_id, "vm.start", name);
    let lock = app.vm_lock(name);
    let _guard = lock.lock().await;
    start_locked(app, op_id, name, progress).await
}

/// `vm.start` with the VM's lock held (restart holds it across stop and start).
pub(crate) async fn start_locked(
    app: &App,
    op_id: &str,
    name: &str,
    progress: &ProgressSink,
) -> Result<VmInfo> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    if rec.state == VmState::Running {
        return Ok(super::query::info_for(app, &rec));
    }
    require_privilege(app)?;
    let image = app.db(|s| s.get_image(&rec.image_id)).map_err(|_| {
        DaemonError::NotFound(format!(
            "the image of VM {name} is gone; it cannot boot again (delete it with banger vm delete {name})"
        ))
    })?;
    app.db(|s| s.set_vm_state(&rec.id, VmState::Creating, None))?;
    app.events.vm(&rec, VmState::Creating, None);
    let st = Stages::new(name, progress, Some((&app.ops, op_id)));
    boot_recorded(app, &rec, &image, st).await
}

/// Start `rec` and record the outcome: `running`, or `error` with the reason after
/// every step that ran was undone.
pub(crate) async fn boot_recorded(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    stages: Stages<'_>,
) -> Result<VmInfo> {
    let mut steps = Steps::new(stages, &app.config.failpoints);
    match run_steps(app, rec, image, &mut steps).await {
        Ok(()) => {
            let timings = steps.commit();
            app.db(|s| s.set_vm_state(&rec.id, VmState::Running, None))?;
            app.events.vm(rec, VmState::Running, None);
            app.dns.names.set(rec.name.as_str(), rec.ip);
            crate::ssh_files::refresh(app);
            let mut info = super::query::info_for(app, &app.db(|s| s.get_vm(&rec.id))?);
            let total: u64 = timings.iter().map(|t| t.ms).sum();
            tracing::info!(vm = %rec.name, total_ms = total, "vm running");
            info.timings = timings;
            Ok(info)
        }
        Err(e) => {
            tracing::warn!(vm = %rec.name, "start failed: {e}");
            steps.rollback(app).await;
            let message = e.to_string();
            match app.db(|s| s.set_vm_state(&rec.id, VmState::Error, Some(&message))) {
                Ok(()) => app.events.vm(rec, VmState::Error, Some(&message)),
                Err(db) => tracing::warn!(vm = %rec.name, "recording the failure failed: {db}"),
            }
            Err(e)
        }
    }
}

/// The start steps. Disks that existed before (a stopped VM's data) are never
/// recorded for undo.
async fn run_steps(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    steps: &mut Steps<'_>,
) -> Result<()> {
    let image_dir = app.layout.image_dir(&image.id);
    let vm_dir = app.layout.vm_dir(&rec.id);
    let rt_dir = app.layout.vm_runtime(&rec.id);

    steps.begin("disks")?;
    // A new VM (no disks yet) restores from a warm snapshot of its image and shape
    // when there is a current one; anything else boots cold.
    let (overlay, work) = (vm_dir.join(files::OVERLAY), vm_dir.join(files::WORK));
    let mut restoring = None;
    if !overlay.exists() && !work.exists() {
        if let Some(found) = warm::restore::find(app, rec, image, steps.progress()).await {
            restoring = Some(warm::restore::disks(found, &vm_dir, &overlay, &work, steps).await?);
        }
    }
    if restoring.is_none() {
        disks(app, rec, &image_dir, &vm_dir, steps).await?;
    }

    steps.begin("network")?;
    let net = super::network::network(app, rec, steps).await?;

    if !app.backends.accel_known() {
        // Once per daemon: decide KVM vs TCG by booting the kernel (cached per host boot).
        steps.begin("accel-probe")?;
    }
    let selected = app
        .backends
        .select(rec.vmm, &image_dir, steps.progress())
        .await?;

    if let Some(prepared) = restoring.take() {
        if warm::restore::fits(app, &prepared, selected.vmm.name()) {
            let mark = steps.mark();
            let spec = machine_spec(
                app,
                rec,
                &image_dir,
                selected.kernel.clone(),
                overlay.clone(),
                work.clone(),
                &net,
                &rt_dir,
                // A restore's command line is the snapshot's; DNS comes with its identity.
                &[],
            );
            let r = warm::restore::boot(
                app,
                rec,
                &prepared,
                selected.vmm.as_ref(),
                spec,
                &net,
                &vm_dir,
                steps,
            )
            .await;
            match r {
                Ok(()) => return steps.end(),
                Err(e) => {
                    tracing::warn!(vm = %rec.name, "restore from the warm snapshot failed: {e}");
                    steps.progress().send(
                        "warning",
                        Some(format!(
                            "restoring {} from the warm snapshot of {} failed ({e}); booting cold. Remake it with: banger image warm {}",
                            rec.name, image.name, image.name
                        )),
                    );
                    steps.undo_to(app, mark).await;
                }
            }
        }
        // The copies of the snapshot's disks give way to fresh ones.
        for f in [&overlay, &work, &vm_dir.join(files::HOST_KEY)] {
            let _ = std::fs::remove_file(f);
        }
        steps.begin("disks")?;
        disks(app, rec, &image_dir, &vm_dir, steps).await?;
    }

    steps.begin("boot")?;
    std::fs::create_dir_all(&rt_dir).map_err(DaemonError::io("creating", &rt_dir))?;
    steps.created(Undo::RemoveDir(rt_dir.clone()));
    let dns = guest_dns(app, rec).await;
    let spec = machine_spec(
        app,
        rec,
        &image_dir,
        selected.kernel,
        overlay,
        work,
        &net,
        &rt_dir,
        &dns,
    );
    let vmm = selected.vmm.as_ref();
    let h = launch(app, vmm, &spec, &vm_dir, &net, steps, "starting the VM").await?;

    let deadline = Instant::now() + app.config.boot_timeout;
    let timeout = app.config.boot_timeout;
    steps.begin("agent")?;
    let mut stall = StallWatch::new(spec.initrd.is_some(), timeout);
    let mut h = h;
    let mut relaunched = false;
    loop {
        let ready = app.guest.agent_ready(
            Target {
                id: &rec.id,
                name: rec.name.as_str(),
                handles: &h,
            },
            timeout,
        );
        match wait_guest(vmm, &h, &rec.id, deadline, &mut stall, ready).await {
            Err(GuestError::Stalled) if !relaunched => {
                tracing::warn!(
                    vm = %rec.name,
                    "the guest kernel did not run banger's init within {:?}; restarting the VM once{}",
                    stall::STALL_AFTER.min(timeout / 2),
                    console_tail(&h.console_log)
                );
                if let Err(e) = vmm.kill(&h).await {
                    tracing::warn!(vm = %rec.name, "stopping the stalled VMM: {e}");
                }
                vmm.cleanup(&rt_dir);
                h = launch(app, vmm, &spec, &vm_dir, &net, steps, "starting the VM").await?;
                relaunched = true;
                // The second boot has what is left of the deadline; a stall is still
                // reported as one rather than as a plain timeout.
                let left = deadline.saturating_duration_since(Instant::now());
                stall = StallWatch::new(true, left);
            }
            r => break r.map_err(guest_error("the guest agent never answered", &h))?,
        }
    }
    // Readiness is the agent answering: commands go through it, and sshd (when the
    // image has one) comes up on its own for the user's own tools.
    if !vm_dir.join(files::HOST_KEY).exists() {
        // An overlay from before banger generated host keys: pin the key the guest
        // reports over its agent channel (which no other guest can reach).
        super::host_key::pin_from_guest(app, rec, &h).await;
    }
    steps.end()
}

/// Launch the VMM for `spec` and record it (undo: kill it; `handles.json`). `what`
/// names the launch in its error (a cold boot, a restore). A VMM that cannot open its
/// tap by name (QEMU as an unprivileged owner, where `/dev/net/tun` is root's) gets it
/// already open from the privileged side, as libvirt does. In rootless mode the VM's
/// passt starts first (each launch: it quits with the QEMU it served).
pub(crate) async fn launch(
    app: &App,
    vmm: &dyn Vmm,
    spec: &MachineSpec,
    vm_dir: &Path,
    net: &Attachment,
    steps: &mut Steps<'_>,
    what: &'static str,
) -> Result<Handles> {
    let plugged = spec.net.as_ref().is_some_and(|n| !n.unplugged);
    let launched = match net {
        Attachment::Tap(tap) if plugged && vmm.takes_tap_fd() => {
            let fd = app
                .privileged
                .open_tap(tap)
                .await
                .map_err(DaemonError::host(format!("opening tap {tap} for the VMM")))?;
            vmm.launch_with_tap(spec, fd).await
        }
        Attachment::Passt(plan) if plugged => {
            match super::userspace::start_passt(plan, steps).await {
                Ok(()) => vmm.launch(spec).await,
                Err(e) => {
                    // passt refuses some hosts (no default route: offline): the VM still
                    // starts, on QEMU's user-mode networking.
                    tracing::warn!("{e}; using QEMU's user-mode networking for this start");
                    steps.progress().send(
                        "warning",
                        Some(format!(
                            "{e}; this VM uses QEMU's user-mode networking instead (banger doctor)"
                        )),
                    );
                    vmm.launch(&plan.fallback_spec(spec)).await
                }
            }
        }
        _ => vmm.launch(spec).await,
    };
    let h = launched.map_err(DaemonError::vmm(what))?;
    steps.created(Undo::KillVmm {
        handles: h.clone(),
        vm_dir: vm_dir.to_path_buf(),
        runtime_dir: spec.runtime_dir.clone(),
    });
    steps.point("launched")?;
    handles::write(
        vm_dir,
        &VmHandles {
            vmm: h.clone(),
            tap: net.tap().to_string(),
        },
    )
    .map_err(DaemonError::io("recording VM handles in", vm_dir))?;
    if let Some(port) = net.ssh_port() {
        super::userspace::record_ssh_port(&spec.runtime_dir, port)?;
    }
    Ok(h)
}

/// The `disks` step: the VM's state directory and the disks it lacks.
async fn disks(
    app: &App,
    rec: &VmRecord,
    image_dir: &Path,
    vm_dir: &Path,
    steps: &mut Steps<'_>,
) -> Result<(PathBuf, PathBuf)> {
    if !vm_dir.exists() {
        std::fs::create_dir_all(vm_dir).map_err(DaemonError::io("creating", vm_dir))?;
        steps.created(Undo::RemoveDir(vm_dir.to_path_buf()));
    }
    let (overlay, work) = (vm_dir.join(files::OVERLAY), vm_dir.join(files::WORK));
    if !overlay.exists() {
        // A new upper layer comes with a new guest host key, generated here and
        // pinned before the guest ever boots.
        let host_key = vm_dir.join(files::HOST_KEY);
        let _ = std::fs::remove_file(&host_key);
        let (d, o, k) = (app.disks.clone(), overlay.clone(), host_key.clone());
        blocking("overlay disk creation", move || {
            d.create_overlay(&o, &k)
                .map_err(DaemonError::build("creating the overlay disk"))
        })
        .await?;
        steps.created(Undo::RemoveFile(overlay.clone()));
        steps.created(Undo::RemoveFile(host_key));
    }
    if !work.exists() {
        let (d, w, seed, key, mib) = (
            app.disks.clone(),
            work.clone(),
            image_dir.join(img_files::WORK_SEED),
            app.public_key.clone(),
            rec.disk_mib,
        );
        blocking("work disk creation", move || {
            d.create_work(&w, mib, &seed, &key)
                .map_err(DaemonError::build("creating the work disk"))
        })
        .await?;
        steps.created(Undo::RemoveFile(work.clone()));
    }
    Ok((overlay, work))
}

/// The machine a VM boots: the image's kernel, banger's initrd, the three disks (base
/// read-only, then overlay and work) and the tap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn machine_spec(
    app: &App,
    rec: &VmRecord,
    image_dir: &Path,
    kernel: PathBuf,
    overlay: PathBuf,
    work: PathBuf,
    attached: &Attachment,
    rt_dir: &Path,
    dns: &[std::net::IpAddr],
) -> MachineSpec {
    let subnet = app.config.subnet;
    let net = GuestNet {
        ip: rec.ip,
        prefix: subnet.prefix,
        gateway: subnet.gateway(),
    };
    let initrd = image_dir.join(img_files::INITRD);
    let mut cmdline = format!(
        "{}={}/{} {}={} {}={}",
        key::IP,
        net.ip,
        net.prefix,
        key::GATEWAY,
        net.gateway,
        key::HOSTNAME,
        rec.name,
    );
    let dns = dns.to_vec();
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(ToString::to_string).collect();
        cmdline.push_str(&format!(" {}={}", key::DNS, list.join(",")));
    }
    if let Some(param) = attached.mtu_param() {
        cmdline.push_str(&param);
    }
    if knows_init_modes(&initrd) {
        cmdline.push_str(&format!(" {}={}", key::INIT, init_arg(rec.init)));
    } else {
        tracing::warn!(
            vm = %rec.name,
            "the image's initrd predates banger.init: booting the image's systemd; rebuild the \
             image (banger image build) for the fast init and commands through the agent"
        );
    }
    MachineSpec {
        id: rec.id.clone(),
        cpus: rec.cpus,
        memory_mib: rec.memory_mib,
        kernel,
        initrd: Some(initrd),
        cmdline,
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
            tap: attached.tap().to_string(),
            mac: net.mac(),
            unplugged: matches!(attached, Attachment::None),
            backend: attached.backend(),
        }),
        runtime_dir: rt_dir.to_path_buf(),
        restore: None,
    }
}

/// Whether the agent in `initrd` understands `banger.init` (it carries
/// [`key::FAST_INIT_MARKER`]). An older one would take the value for a program and fail
/// to boot; without the parameter it boots systemd as it always did. Reads at most
/// 256 MiB (banger's initrds are a few MiB, uncompressed).
fn knows_init_modes(initrd: &Path) -> bool {
    use std::io::Read;
    let mut data = Vec::new();
    let read = std::fs::File::open(initrd).and_then(|f| f.take(256 << 20).read_to_end(&mut data));
    if read.is_err() {
        // Not readable here: let the VMM report it; assume a current initrd.
        return true;
    }
    let marker = key::FAST_INIT_MARKER.as_bytes();
    data.windows(marker.len()).any(|w| w == marker)
}

/// The `banger.init` value for a VM's init mode.
fn init_arg(init: InitMode) -> &'static str {
    match init {
        InitMode::Agent => key::INIT_AGENT,
        InitMode::Systemd => key::INIT_SYSTEMD,
    }
}

/// How often a wait checks that the VMM still runs.
const ALIVE_POLL: Duration = Duration::from_millis(250);

/// Wait for `fut`, failing early if the VMM dies, the kernel stalls before init
/// ([`StallWatch`]) or the deadline passes.
async fn wait_guest(
    vmm: &dyn Vmm,
    h: &Handles,
    id: &str,
    deadline: Instant,
    stall: &mut StallWatch,
    fut: impl std::future::Future<Output = Result<(), GuestError>>,
) -> Result<(), GuestError> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tokio::time::sleep(ALIVE_POLL) => {
                if !vmm.is_alive(h, id) {
                    return Err(GuestError::VmmExited);
                }
                if stall.stalled(&h.console_log) {
                    return Err(GuestError::Stalled);
                }
                if Instant::now() > deadline {
                    return Err(GuestError::Timeout);
                }
            }
        }
    }
}

/// A failed wait as a [`DaemonError::Guest`] carrying the console's last lines.
fn guest_error(what: &'static str, h: &Handles) -> impl FnOnce(GuestError) -> DaemonError {
    let log = h.console_log.clone();
    move |source| DaemonError::guest(what, console_tail(&log))(source)
}

/// `; last console lines (PATH):\n  …` for the last ten non-empty lines, or nothing.
pub(crate) fn console_tail(log: &Path) -> String {
    let text = tail_text(log, 64 * 1024);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
    format!("; last console lines ({}):\n  {tail}", log.display())
}

/// The last `max` bytes of the file at `log` (lossily decoded; empty if unreadable).
/// The console is written by the guest: never read it whole.
pub(crate) fn tail_text(log: &Path, max: u64) -> String {
    String::from_utf8_lossy(&banger_vmm::console::tail(log, max)).into_owned()
}

/// The name servers a guest is given: banger's responder on the bridge's gateway
/// (or the host's upstreams without it), or in rootless mode its stack's forwarder.
pub(crate) async fn guest_dns(app: &App, rec: &VmRecord) -> Vec<std::net::IpAddr> {
    match &app.rootless {
        Some(_) => super::userspace::guest_dns(app, rec.ip),
        None => {
            app.dns
                .servers_for_guests(app.privileged.as_ref(), app.config.subnet.gateway())
                .await
        }
    }
}

/// Refuse to start anything when privileged operations cannot be done at all, before
/// anything is created. Rootless mode needs none.
pub(crate) fn require_privilege(app: &App) -> Result<()> {
    if app.rootless.is_some() {
        return Ok(());
    }
    app.privileged
        .available()
        .map_err(|e| DaemonError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_initrds_whose_agent_knows_banger_init_get_it() {
        let d = tempfile::tempdir().unwrap();
        let (new, old) = (d.path().join("new"), d.path().join("old"));
        let mut bytes = b"070701 cpio header ...".to_vec();
        bytes.extend(key::FAST_INIT_MARKER.as_bytes());
        std::fs::write(&new, &bytes).unwrap();
        std::fs::write(&old, b"070701 an agent from before the fast init").unwrap();
        assert!(knows_init_modes(&new));
        assert!(!knows_init_modes(&old));
    }
}
