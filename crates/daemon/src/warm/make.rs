//! `image warm`: boot a template guest, save it, publish the snapshot.
//!
//! The template is a machine like any VM of the image and shape (the same disks,
//! devices and kernel), except that its network device reaches nothing (each
//! restored copy gets its own tap) and it is no VM: no row, no name, no tap. It
//! boots in a staging directory beside the published snapshots; once its agent
//! answers (and its sshd listens, when the image has one) its agent connection is
//! closed, the guest is paused and saved, the VMM is killed, and the staging
//! directory (state, both disks, manifest; all 0600) is renamed into place,
//! replacing an older snapshot of the same shape.

use super::{binding, files, Manifest, Shape, FORMAT};
use crate::app::App;
use crate::error::{blocking, DaemonError, Result};
use crate::vm::guest::Target;
use crate::vm::start::machine_spec;
use banger_image::files as img_files;
use banger_model::{ImageRecord, VmName, VmRecord, VmState, VmmChoice};
use banger_rpc::ProgressSink;
use banger_vmm::Handles;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest a save may take (a 1 GiB guest saves in about a second here).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the template waits for its sshd to listen before the save.
const SSHD_SETTLE: Duration = Duration::from_secs(15);

/// `image.warm`: make (or remake) `image`'s snapshot of `shape`.
pub async fn warm(
    app: &App,
    op_id: &str,
    image: &ImageRecord,
    shape: Shape,
    progress: &ProgressSink,
) -> Result<super::WarmInfo> {
    let _op = app.ops.begin(op_id, "image.warm", &image.name);
    let _guard = app.warm_lock(&image.id).write_owned().await;
    let started = Instant::now();
    let parent = super::image_dir(app, &image.id);
    create_private_dir(&parent)?;
    let staging = parent.join(format!(".staging-{}-{}", shape.dir_name(), random_hex(4)));
    create_private_dir(&staging)?;
    let template_id = format!("warm{}", random_hex(4));
    let rt_dir = app.layout.vm_runtime(&template_id);
    let mut launched: Option<Handles> = None;
    let r = run(
        app,
        image,
        shape,
        &staging,
        &template_id,
        &rt_dir,
        &mut launched,
        progress,
    )
    .await;
    // Whatever happened, the template goes.
    if let Some(h) = &launched {
        let vmm = app.backends.for_handles(h);
        if let Err(e) = vmm.kill(h).await {
            tracing::warn!("stopping the warm template failed: {e}");
        }
        vmm.cleanup(&rt_dir);
    }
    app.guest.forget(&template_id);
    let _ = std::fs::remove_dir_all(&rt_dir);
    let mut manifest = match r {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    manifest.warm_ms = started.elapsed().as_millis() as u64;
    progress.stage("publish");
    let target = super::snapshot_dir(app, &image.id, &shape);
    let (s, t) = (staging.clone(), target.clone());
    let published = blocking("snapshot publication", move || publish(&s, &t, &manifest)).await;
    if let Err(e) = published {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    tracing::info!(image = %image.name, shape = %shape.dir_name(), ms = started.elapsed().as_millis() as u64, "warm snapshot published");
    Ok(super::info_for(app, image, &target).await)
}

/// Boot the template, wait for it, save it; returns the manifest (without timing).
#[allow(clippy::too_many_arguments)]
async fn run(
    app: &App,
    image: &ImageRecord,
    shape: Shape,
    staging: &Path,
    template_id: &str,
    rt_dir: &Path,
    launched: &mut Option<Handles>,
    progress: &ProgressSink,
) -> Result<Manifest> {
    let image_dir = app.layout.image_dir(&image.id);
    progress.stage("disks");
    let (overlay, work) = (staging.join(files::OVERLAY), staging.join(files::WORK));
    let (d, o, k, w, seed, key, mib) = (
        app.disks.clone(),
        overlay.clone(),
        staging.join("template_key.pub"),
        work.clone(),
        image_dir.join(img_files::WORK_SEED),
        app.public_key.clone(),
        shape.disk_mib,
    );
    blocking("template disk creation", move || {
        d.create_overlay(&o, &k)
            .map_err(DaemonError::build("creating the template's overlay disk"))?;
        let _ = std::fs::remove_file(&k);
        d.create_work(&w, mib, &seed, &key)
            .map_err(DaemonError::build("creating the template's work disk"))
    })
    .await?;

    let selected = app
        .backends
        .select(VmmChoice::Qemu, &image_dir, progress)
        .await?;
    let rec = template_record(app, image, shape, template_id)?;
    progress.stage("boot");
    std::fs::create_dir_all(rt_dir).map_err(DaemonError::io("creating", rt_dir))?;
    let spec = machine_spec(
        app,
        &rec,
        &image_dir,
        selected.kernel.clone(),
        overlay,
        work,
        &crate::vm::userspace::Attachment::None,
        rt_dir,
        // The template reaches no network; each restore gets its DNS with its identity.
        &[],
    );
    let binding = binding::current(app, image, &shape, selected.vmm.name()).await?;
    let h = selected
        .vmm
        .launch(&spec)
        .await
        .map_err(DaemonError::vmm("starting the warm template"))?;
    *launched = Some(h.clone());

    progress.stage("agent");
    let target = Target {
        id: template_id,
        name: rec.name.as_str(),
        handles: &h,
    };
    app.guest
        .agent_ready(target, app.config.boot_timeout)
        .await
        .map_err(DaemonError::guest(
            "the warm template's agent never answered",
            crate::vm::start::console_tail(&h.console_log),
        ))?;
    // A snapshot taken while sshd starts would make every restore finish starting it.
    let settle = Instant::now();
    while settle.elapsed() < SSHD_SETTLE {
        match app.guest.ports(target).await {
            Ok(p) if p.contains(&22) => break,
            Err(_) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    // The restored copies open their own agent connections: the template's goes
    // first, and the agent is given a moment to see it gone.
    app.guest.forget(template_id);
    tokio::time::sleep(Duration::from_millis(500)).await;

    progress.stage("save");
    let state = staging.join(files::STATE);
    selected
        .vmm
        .snapshot(&h, &state, SAVE_TIMEOUT)
        .await
        .map_err(DaemonError::vmm("saving the warm template"))?;
    let vmm = app.backends.for_handles(&h);
    vmm.kill(&h)
        .await
        .map_err(DaemonError::vmm("stopping the warm template"))?;
    vmm.cleanup(rt_dir);
    *launched = None;

    progress.stage("checksum");
    let st = staging.to_path_buf();
    let (state_len, state_crc32, overlay_len, work_len) =
        blocking("snapshot checksum", move || {
            let len = |f: &str| {
                let p = st.join(f);
                std::fs::metadata(&p)
                    .map(|m| m.len())
                    .map_err(DaemonError::io("reading", &p))
            };
            let sum = super::restore::checksum_file(&st.join(files::STATE))?;
            Ok((
                len(files::STATE)?,
                sum,
                len(files::OVERLAY)?,
                len(files::WORK)?,
            ))
        })
        .await?;
    Ok(Manifest {
        format: FORMAT,
        binding,
        cmdline: spec.cmdline,
        state_len,
        state_crc32,
        overlay_len,
        work_len,
        created_at: now_secs(),
        warm_ms: 0,
    })
}

/// A VM record describing the template (never stored): the shape, a name, and an
/// address at the top of the subnet that no VM gets before the subnet is full (and
/// that reaches nothing anyway: the template's network is unplugged).
fn template_record(app: &App, image: &ImageRecord, shape: Shape, id: &str) -> Result<VmRecord> {
    let subnet = app.config.subnet;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(subnet.prefix))
        .unwrap_or(0);
    let top = (u32::from(subnet.network) | !mask).saturating_sub(1);
    Ok(VmRecord {
        id: id.to_string(),
        name: VmName::parse("warm-template")
            .map_err(|e| DaemonError::BadRequest(format!("template name: {e}")))?,
        image_id: image.id.clone(),
        state: VmState::Creating,
        ip: std::net::Ipv4Addr::from(top),
        cpus: shape.cpus,
        memory_mib: shape.memory_mib,
        disk_mib: shape.disk_mib,
        created_at: now_secs(),
        error: None,
        vmm: VmmChoice::Qemu,
        created_op: None,
        init: shape.init,
    })
}

/// Make every file 0600, write the manifest, sync, and rename `staging` over
/// `target` (an older snapshot of the shape is removed first).
fn publish(staging: &Path, target: &Path, manifest: &Manifest) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| DaemonError::BadRequest(format!("encoding the manifest: {e}")))?;
    let m = staging.join(files::MANIFEST);
    banger_image::durable::write_file(&m, &text).map_err(DaemonError::io("writing", &m))?;
    for f in [files::MANIFEST, files::STATE, files::OVERLAY, files::WORK] {
        let p = staging.join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(DaemonError::io("restricting", &p))?;
        banger_image::durable::sync_file(&p).map_err(DaemonError::io("syncing", &p))?;
    }
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(DaemonError::io("replacing", target))?;
    }
    banger_image::durable::rename_durably(staging, target)
        .map_err(DaemonError::io("publishing", target))
}

/// A directory only the daemon's user can enter.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(DaemonError::io("creating", dir)(e)),
    }
}

/// `n` random bytes as hex.
pub(crate) fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The staging directories of unfinished warms (a daemon killed mid-warm), swept at
/// daemon start.
pub fn sweep(warm_dir: &Path) {
    let Ok(images) = std::fs::read_dir(warm_dir) else {
        return;
    };
    for i in images.flatten() {
        let Ok(entries) = std::fs::read_dir(i.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                let p: PathBuf = e.path();
                tracing::info!(path = %p.display(), "removing an unfinished warm snapshot");
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
}
