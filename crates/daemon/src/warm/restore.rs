//! Restoring a new VM from a warm snapshot (called by the start steps).
//!
//! Stages: `disks` (find and check the snapshot, copy its disks sparsely, make the
//! VM's ssh host key) → `network` (as a cold boot) → `restore` (the VMM loads the
//! saved state; the guest stays paused until it has) → `agent` (the restored agent
//! answers on the new channel) → `identity` (the agent makes the guest a machine of
//! its own; see `banger-agent`'s identity.rs). Any failure from `restore` on undoes
//! what the restore made and the start continues as a cold boot with fresh disks.

use super::{binding, files, read_manifest, Manifest, Shape};
use crate::app::App;
use crate::error::{blocking, DaemonError, Result};
use crate::vm::guest::Target;
use crate::vm::stages::{Steps, Undo};
use banger_model::{GuestNet, ImageRecord, VmRecord};
use banger_rpc::ProgressSink;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long loading a saved state may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restored agent may take to answer (it was running when saved).
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A snapshot that fits the VM about to start, its files checked.
pub struct Found {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The image's warm lock, shared: nobody replaces the snapshot until the restore
    /// is done with its files.
    _held: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// What the `disks` step made for a restore, for the later steps.
pub struct Prepared {
    /// The snapshot.
    pub found: Found,
    /// The new ssh host private key (OpenSSH text) the agent installs.
    pub host_key: String,
    /// Its public line (`ssh-ed25519 AAAA…`), pinned on the host.
    pub host_key_public: String,
}

/// Say once, on the call's progress (the CLI shows it) and in the log, that a
/// snapshot could not be used.
fn warn(progress: &ProgressSink, image: &str, why: &str) {
    tracing::warn!(image, "warm snapshot not used: {why}");
    progress.send(
        "warning",
        Some(format!(
            "the warm snapshot of {image} could not be used ({why}); booting cold. Remake it with: banger image warm {image}"
        )),
    );
}

/// The snapshot of `image` fitting `rec`, if there is one that is current and whole.
/// A stale one (anything it is bound to changed) is skipped silently; a corrupt or
/// truncated one with a warning.
pub async fn find(
    app: &App,
    rec: &VmRecord,
    image: &ImageRecord,
    progress: &ProgressSink,
) -> Option<Found> {
    let shape = Shape {
        cpus: rec.cpus,
        memory_mib: rec.memory_mib,
        disk_mib: rec.disk_mib,
        init: rec.init,
    };
    let dir = super::snapshot_dir(app, &image.id, &shape);
    if !dir.exists() {
        return None;
    }
    // An `image warm` or `--rm` of this image in progress: boot cold rather than wait.
    let Ok(held) = app.warm_lock(&image.id).try_read_owned() else {
        tracing::info!(image = %image.name, "its warm snapshot is being replaced: booting cold");
        return None;
    };
    if !dir.exists() {
        return None;
    }
    let manifest = match read_manifest(&dir) {
        Ok(m) => m,
        Err(e) => {
            warn(progress, &image.name, &format!("unreadable manifest: {e}"));
            return None;
        }
    };
    let saved = &manifest.binding;
    let mut now = binding::current(app, image, &shape, &saved.vmm)
        .await
        .ok()?;
    if now.accel == "unknown" {
        // Decided by the first start of this daemon, after this step: checked then.
        now.accel = saved.accel.clone();
    }
    if let Some(why) = now.differs(saved) {
        tracing::info!(image = %image.name, "warm snapshot is stale ({why}): booting cold");
        return None;
    }
    let (d, m) = (dir.clone(), manifest.clone());
    match blocking("snapshot check", move || Ok(check_files(&d, &m))).await {
        Ok(Ok(())) => Some(Found {
            dir,
            manifest,
            _held: held,
        }),
        Ok(Err(why)) => {
            warn(progress, &image.name, &why);
            None
        }
        Err(e) => {
            warn(progress, &image.name, &e.to_string());
            None
        }
    }
}

/// The snapshot's files are what its manifest says: lengths, and the saved state's
/// checksum (a truncated or corrupt state file must never reach the VMM).
fn check_files(dir: &Path, m: &Manifest) -> std::result::Result<(), String> {
    for (f, want) in [
        (files::STATE, m.state_len),
        (files::OVERLAY, m.overlay_len),
        (files::WORK, m.work_len),
    ] {
        let p = dir.join(f);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !meta.file_type().is_file() {
            return Err(format!("{} is not a regular file", p.display()));
        }
        if meta.len() != want {
            return Err(format!(
                "{} is {} bytes, not {want} (truncated?)",
                p.display(),
                meta.len()
            ));
        }
    }
    let sum = checksum_file(&dir.join(files::STATE)).map_err(|e| e.to_string())?;
    if sum != m.state_crc32 {
        return Err(format!(
            "{} does not match its checksum (corrupt)",
            files::STATE
        ));
    }
    Ok(())
}

/// CRC-32 of the file at `path`, 8 lowercase hex digits. Not a defence against an
/// adversary (the file is the daemon's, 0600): it catches a truncated, torn or
/// bit-rotted state file, and at several GB/s it costs a restore a few tens of ms
/// (SHA-256 cost 150 ms here for a 117 MB state).
pub fn checksum_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(DaemonError::io("opening", path))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(DaemonError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:08x}", h.finalize()))
}

/// The `disks` step of a restore: the VM's disks are sparse copies of the
/// snapshot's, and a new ssh host key is made and pinned.
pub(crate) async fn disks(
    found: Found,
    vm_dir: &Path,
    overlay: &Path,
    work: &Path,
    steps: &mut Steps<'_>,
) -> Result<Prepared> {
    if !vm_dir.exists() {
        std::fs::create_dir_all(vm_dir).map_err(DaemonError::io("creating", vm_dir))?;
        steps.created(Undo::RemoveDir(vm_dir.to_path_buf()));
    }
    for (src, dst) in [(files::OVERLAY, overlay), (files::WORK, work)] {
        let (s, d) = (found.dir.join(src), dst.to_path_buf());
        steps.created(Undo::RemoveFile(d.clone()));
        blocking("disk copy", move || sparse_copy(&s, &d)).await?;
    }
    let host_key_pub = vm_dir.join(crate::vm::files::HOST_KEY);
    steps.created(Undo::RemoveFile(host_key_pub.clone()));
    let dir = vm_dir.to_path_buf();
    let host_key = blocking("host key generation", move || {
        let tmp = tempfile::Builder::new()
            .prefix(".host-key-")
            .tempdir_in(&dir)
            .map_err(DaemonError::io("creating a key directory in", &dir))?;
        let (private, line) = banger_guest::keys::generate_host_key(tmp.path())
            .map_err(DaemonError::build("making the VM's ssh host key"))?;
        let text =
            std::fs::read_to_string(&private).map_err(DaemonError::io("reading", &private))?;
        banger_image::durable::write_file(&host_key_pub, format!("{line}\n").as_bytes())
            .map_err(DaemonError::io("writing", &host_key_pub))?;
        Ok((text, line))
    })
    .await?;
    Ok(Prepared {
        found,
        host_key: host_key.0,
        host_key_public: host_key.1,
    })
}

/// `cp --sparse=always` (holes stay holes: the disks are mostly empty; a reflink
/// where the filesystem has them).
fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--"])
        .arg(src)
        .arg(dst)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(DaemonError::io("running cp for", dst))?;
    if !out.status.success() {
        return Err(DaemonError::BadRequest(format!(
            "copying {} to {} failed: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether the backend chosen for the VM is the one the snapshot was saved with.
pub fn fits(app: &App, p: &Prepared, vmm: &str) -> bool {
    let b = &p.found.manifest.binding;
    let accel = app.backends.accel().map(|a| a.as_str().to_string());
    b.vmm == vmm && accel.as_deref() == Some(b.accel.as_str())
}

/// The `restore`, `agent` and `identity` steps: launch the VMM on the saved state,
/// wait for the agent, give the guest its identity.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn boot(
    app: &App,
    rec: &VmRecord,
    p: &Prepared,
    vmm: &dyn banger_vmm::Vmm,
    mut spec: banger_vmm::MachineSpec,
    net: &crate::vm::userspace::Attachment,
    vm_dir: &Path,
    steps: &mut Steps<'_>,
) -> Result<()> {
    steps.begin("restore")?;
    let rt_dir = spec.runtime_dir.clone();
    std::fs::create_dir_all(&rt_dir).map_err(DaemonError::io("creating", &rt_dir))?;
    steps.created(Undo::RemoveDir(rt_dir.clone()));
    spec.cmdline = p.found.manifest.cmdline.clone();
    spec.restore = Some(p.found.dir.join(files::STATE));
    let t = std::time::Instant::now();
    let h = crate::vm::start::launch(
        app,
        vmm,
        &spec,
        vm_dir,
        net,
        steps,
        "restoring the VM from its warm snapshot",
    )
    .await?;
    let launched_ms = t.elapsed().as_millis() as u64;
    vmm.resume(&h, LOAD_TIMEOUT)
        .await
        .map_err(DaemonError::vmm("loading the warm snapshot"))?;
    tracing::info!(
        vm = %rec.name,
        launch_ms = launched_ms,
        load_ms = t.elapsed().as_millis() as u64 - launched_ms,
        "restored from the warm snapshot"
    );

    steps.begin("agent")?;
    let target = Target {
        id: &rec.id,
        name: rec.name.as_str(),
        handles: &h,
    };
    let console = || crate::vm::start::console_tail(&h.console_log);
    let ready = app
        .guest
        .agent_ready(target, AGENT_TIMEOUT.min(app.config.boot_timeout));
    tokio::pin!(ready);
    // A VMM that dies after loading (a state that loaded but does not run) fails the
    // restore at once rather than after the agent's timeout.
    let answered = loop {
        tokio::select! {
            r = &mut ready => break r,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if !vmm.is_alive(&h, &rec.id) {
                    break Err(crate::vm::guest::GuestError::VmmExited);
                }
            }
        }
    };
    answered.map_err(|e| {
        DaemonError::guest("the restored guest's agent never answered", console())(e)
    })?;

    steps.begin("identity")?;
    let dns = crate::vm::start::guest_dns(app, rec).await;
    let id = identity(app, rec, p, &dns);
    app.guest.identity(target, &id).await.map_err(|e| {
        DaemonError::guest("the restored guest could not take its identity", console())(e)
    })?;
    Ok(())
}

/// The new identity of `rec`'s guest.
fn identity(
    app: &App,
    rec: &VmRecord,
    p: &Prepared,
    dns: &[std::net::IpAddr],
) -> banger_channel::Identity {
    let subnet = app.config.subnet;
    let net = GuestNet {
        ip: rec.ip,
        prefix: subnet.prefix,
        gateway: subnet.gateway(),
    };
    let dns = dns.iter().map(ToString::to_string).collect();
    let hex = super::make::random_hex;
    // A version 4 UUID: random but for the version nibble and the variant bits.
    let b = hex(16);
    let variant = ["8", "9", "a", "b"][usize::from(b.as_bytes()[16]) % 4];
    let boot_id = format!(
        "{}-{}-4{}-{}{}-{}",
        &b[0..8],
        &b[8..12],
        &b[13..16],
        variant,
        &b[17..20],
        &b[20..32]
    );
    let time_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    banger_channel::Identity {
        hostname: rec.name.to_string(),
        mac: net.mac(),
        address: format!("{}/{}", net.ip, net.prefix),
        gateway: Some(net.gateway.to_string()),
        dns,
        machine_id: hex(16),
        boot_id,
        entropy: hex(64),
        time_ns,
        host_key: Some(p.host_key.clone()),
        host_key_public: Some(p.host_key_public.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warm::binding::{Binding, FileStamp};

    fn manifest(dir: &Path) -> Manifest {
        let stamp = FileStamp {
            len: 1,
            ino: 1,
            mtime_ns: 1,
        };
        let len = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
        Manifest {
            format: crate::warm::FORMAT,
            binding: Binding {
                image_id: "i".into(),
                rootfs: stamp.clone(),
                kernel: stamp.clone(),
                initrd: stamp,
                vmm: "qemu".into(),
                vmm_version: "v".into(),
                accel: "tcg".into(),
                cpus: 2,
                memory_mib: 1024,
                disk_mib: 8192,
                init: "agent".into(),
                banger: "b".into(),
            },
            cmdline: "console=ttyS0".into(),
            state_len: len(files::STATE),
            state_crc32: checksum_file(&dir.join(files::STATE)).unwrap(),
            overlay_len: len(files::OVERLAY),
            work_len: len(files::WORK),
            created_at: 0,
            warm_ms: 0,
        }
    }

    #[test]
    fn a_truncated_or_corrupt_snapshot_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join(files::STATE), &state).unwrap();
        std::fs::write(d.path().join(files::OVERLAY), b"overlay").unwrap();
        std::fs::write(d.path().join(files::WORK), b"work").unwrap();
        let m = manifest(d.path());
        assert_eq!(check_files(d.path(), &m), Ok(()));

        let mut flipped = state.clone();
        flipped[50_000] ^= 1;
        std::fs::write(d.path().join(files::STATE), &flipped).unwrap();
        let e = check_files(d.path(), &m).unwrap_err();
        assert!(e.contains("corrupt"), "{e}");

        std::fs::write(d.path().join(files::STATE), &state[..1000]).unwrap();
        let e = check_files(d.path(), &m).unwrap_err();
        assert!(e.contains("truncated"), "{e}");

        std::fs::write(d.path().join(files::STATE), &state).unwrap();
        std::fs::remove_file(d.path().join(files::WORK)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join(files::WORK)).unwrap();
        let e = check_files(d.path(), &m).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn manifests_are_bounded_and_never_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(files::STATE), b"s").unwrap();
        std::fs::write(d.path().join(files::OVERLAY), b"o").unwrap();
        std::fs::write(d.path().join(files::WORK), b"w").unwrap();
        let m = manifest(d.path());
        let path = d.path().join(files::MANIFEST);
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(read_manifest(d.path()).unwrap(), m);
        std::fs::write(&path, vec![b' '; 70 << 10]).unwrap();
        assert!(read_manifest(d.path()).unwrap_err().contains("over"));
        let mut other = m.clone();
        other.format = 99;
        std::fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(read_manifest(d.path()).unwrap_err().contains("format"));
        std::fs::remove_file(&path).unwrap();
        let real = d.path().join("real.json");
        std::fs::write(&real, serde_json::to_vec(&m).unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert!(
            read_manifest(d.path()).is_err(),
            "a symlinked manifest was followed"
        );
    }
}
