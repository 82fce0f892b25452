//! Warm snapshots: `vm run` and `vm create` in about a second, even without KVM.
//!
//! `image warm IMAGE` boots a template guest of the image until its agent answers,
//! saves its memory and device state (QEMU: migration to a file) and keeps its
//! overlay and work disks beside it, in `state/warm/<image id>/<shape>/` (0700, every
//! file 0600: the daemon's alone, never attached to a guest as they are). A new VM
//! of that image and shape then restores a copy instead of booting ([`restore`]), and
//! its agent gives it an identity of its own before anything else runs.
//!
//! A snapshot is bound ([`Binding`]) to everything that decides whether its saved
//! state fits the machine about to load it: the image (id and the identity of its
//! rootfs, kernel and initrd files, which hold the agent), the VMM, its version and
//! accelerator, vCPUs, memory, the work disk's size, the init mode and banger's own
//! version. A snapshot whose binding differs is never used (a silent cold boot; the
//! next `image warm` replaces it); one whose files do not match its manifest
//! (truncated, corrupt) gives a cold boot and a warning. See docs/warm.md.

pub mod binding;
pub mod make;
pub mod restore;

use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_model::{ImageRecord, InitMode};
pub use binding::Binding;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File names in a snapshot's directory.
pub mod files {
    /// What the snapshot is bound to and what its files must be.
    pub const MANIFEST: &str = "manifest.json";
    /// The guest's saved memory and device state.
    pub const STATE: &str = "state.bin";
    /// The template's overlay disk (copied for each restore).
    pub const OVERLAY: &str = "overlay.ext4";
    /// The template's work disk (copied for each restore).
    pub const WORK: &str = "work.ext4";
}

/// Manifest format this banger writes and reads.
const FORMAT: u32 = 1;
/// The most of a manifest read (a real one is about 1 KiB).
const MAX_MANIFEST: u64 = 64 << 10;

/// A snapshot's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// What the snapshot fits.
    pub binding: Binding,
    /// The kernel command line the template booted with (a restore describes the
    /// machine exactly as it was saved).
    pub cmdline: String,
    /// Length of [`files::STATE`].
    pub state_len: u64,
    /// CRC-32 of [`files::STATE`], 8 lowercase hex digits.
    pub state_crc32: String,
    /// Length of [`files::OVERLAY`].
    pub overlay_len: u64,
    /// Length of [`files::WORK`].
    pub work_len: u64,
    /// Unix seconds when it was made.
    pub created_at: i64,
    /// How long making it took, ms (boot, agent, save).
    pub warm_ms: u64,
}

/// The shape a snapshot is made for, beside the image: what a new VM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Work disk, MiB.
    pub disk_mib: u64,
    /// Init mode.
    pub init: InitMode,
}

impl Shape {
    /// The directory name of this shape's snapshot, e.g. `2c-1024m-4096d-agent`.
    pub fn dir_name(&self) -> String {
        format!(
            "{}c-{}m-{}d-{}",
            self.cpus,
            self.memory_mib,
            self.disk_mib,
            init_name(self.init)
        )
    }
}

/// `agent` or `systemd`.
pub fn init_name(init: InitMode) -> &'static str {
    match init {
        InitMode::Agent => "agent",
        InitMode::Systemd => "systemd",
    }
}

/// The directory of `image`'s snapshots.
pub fn image_dir(app: &App, image_id: &str) -> PathBuf {
    app.layout.warm_dir().join(image_id)
}

/// The directory of `image`'s snapshot of `shape`.
pub fn snapshot_dir(app: &App, image_id: &str, shape: &Shape) -> PathBuf {
    image_dir(app, image_id).join(shape.dir_name())
}

/// Read a snapshot's manifest (bounded; a symlink is not followed).
pub fn read_manifest(dir: &Path) -> std::result::Result<Manifest, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(files::MANIFEST);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_MANIFEST + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_MANIFEST {
        return Err(format!("{} is over {MAX_MANIFEST} bytes", path.display()));
    }
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if m.format != FORMAT {
        return Err(format!(
            "{} has format {} (this banger reads {FORMAT})",
            path.display(),
            m.format
        ));
    }
    Ok(m)
}

/// One snapshot as `image warm --list` shows it.
pub type WarmInfo = banger_rpc::WarmInfo;

/// `image.warm_list`: every snapshot, with whether it still fits its image.
pub async fn list(app: &App) -> Result<Vec<WarmInfo>> {
    let images = app.db(|s| s.list_images())?;
    let mut out = vec![];
    for image in images {
        let dir = image_dir(app, &image.id);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            let d = dir.join(&n);
            out.push(info_for(app, &image, &d).await);
        }
    }
    Ok(out)
}

/// What `--list` says about the snapshot in `dir`.
async fn info_for(app: &App, image: &ImageRecord, dir: &Path) -> WarmInfo {
    let size: u64 = [files::STATE, files::OVERLAY, files::WORK]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .sum();
    let mut info = WarmInfo {
        image: image.name.clone(),
        shape: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpus: 0,
        memory_mib: 0,
        disk_mib: 0,
        init: String::new(),
        vmm: String::new(),
        created_at: 0,
        bytes: size,
        warm_ms: 0,
        status: String::new(),
    };
    match read_manifest(dir) {
        Ok(m) => {
            let b = &m.binding;
            info.cpus = b.cpus;
            info.memory_mib = b.memory_mib;
            info.disk_mib = b.disk_mib;
            info.init = b.init.clone();
            info.vmm = b.vmm.clone();
            info.created_at = m.created_at;
            info.warm_ms = m.warm_ms;
            let shape = b.shape();
            info.status = match binding::current(app, image, &shape, &b.vmm).await {
                Ok(now) => match now.differs(b) {
                    None => "ready".into(),
                    Some(why) => format!("stale ({why})"),
                },
                Err(e) => format!("unknown ({e})"),
            };
        }
        Err(e) => info.status = format!("corrupt ({e})"),
    }
    info
}

/// `image.warm_rm`: remove `image`'s snapshots (of one shape, or all). Returns how
/// many were removed.
pub async fn remove(app: &App, image_name: &str, shape: Option<Shape>) -> Result<u64> {
    let image = app.db(|s| s.get_image_by_name(image_name))?;
    let _guard = app.warm_lock(&image.id).write_owned().await;
    let dir = image_dir(app, &image.id);
    let targets: Vec<PathBuf> = match shape {
        Some(s) => vec![dir.join(s.dir_name())],
        None => std::fs::read_dir(&dir)
            .map(|r| r.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default(),
    };
    let mut n = 0;
    for t in targets {
        if t.exists() {
            std::fs::remove_dir_all(&t).map_err(DaemonError::io("removing", &t))?;
            n += 1;
        }
    }
    if shape.is_none() {
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(n)
}

/// Remove every snapshot of the image `image_id` (the image is being deleted).
pub fn remove_all(app: &App, image_id: &str) -> Result<()> {
    let dir = image_dir(app, image_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DaemonError::io("removing", &dir)(e)),
    }
}
