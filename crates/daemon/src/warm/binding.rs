//! What a snapshot is bound to, and computing it for the machine about to load it.

use super::{init_name, Shape};
use crate::app::App;
use crate::error::Result;
use banger_image::files as img_files;
use banger_model::{ImageRecord, InitMode};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::sync::OnceCell;

/// A file as it was when the snapshot was made: published image files are never
/// rewritten, so a rebuilt or replaced file shows as another inode, length or time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Inode number.
    pub ino: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of `path` now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            len: m.len(),
            ino: m.ino(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

/// Everything a saved guest state depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The image's id.
    pub image_id: String,
    /// The image's read-only base (the guest's page cache holds its blocks).
    pub rootfs: FileStamp,
    /// The kernel that booted.
    pub kernel: FileStamp,
    /// banger's initrd (it holds the agent that runs in the saved guest).
    pub initrd: FileStamp,
    /// Backend name (`qemu`).
    pub vmm: String,
    /// The backend's version line.
    pub vmm_version: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Work disk, MiB.
    pub disk_mib: u64,
    /// `agent` or `systemd`.
    pub init: String,
    /// banger's version and commit.
    pub banger: String,
}

impl Binding {
    /// The shape this binding is for.
    pub fn shape(&self) -> Shape {
        Shape {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            disk_mib: self.disk_mib,
            init: if self.init == "systemd" {
                InitMode::Systemd
            } else {
                InitMode::Agent
            },
        }
    }

    /// The first thing that differs between `self` (now) and `saved`, for messages.
    pub fn differs(&self, saved: &Binding) -> Option<&'static str> {
        let checks: [(&'static str, bool); 12] = [
            ("another image", self.image_id != saved.image_id),
            ("the image's rootfs changed", self.rootfs != saved.rootfs),
            ("the kernel changed", self.kernel != saved.kernel),
            ("the initrd changed", self.initrd != saved.initrd),
            ("another VMM", self.vmm != saved.vmm),
            (
                "the VMM was upgraded",
                self.vmm_version != saved.vmm_version,
            ),
            ("another accelerator", self.accel != saved.accel),
            ("other vCPUs", self.cpus != saved.cpus),
            ("other memory", self.memory_mib != saved.memory_mib),
            ("another disk size", self.disk_mib != saved.disk_mib),
            ("another init mode", self.init != saved.init),
            ("another banger version", self.banger != saved.banger),
        ];
        checks.into_iter().find(|(_, d)| *d).map(|(w, _)| w)
    }
}

/// banger's version line for bindings: a new build (another commit) is another banger.
pub fn banger_version() -> String {
    format!("{} {}", banger_buildinfo::VERSION, banger_buildinfo::COMMIT)
}

/// The binding a snapshot of `image` in `shape` for backend `vmm` would have now.
pub async fn current(app: &App, image: &ImageRecord, shape: &Shape, vmm: &str) -> Result<Binding> {
    let dir = app.layout.image_dir(&image.id);
    let stamp = |f: &str| {
        let p = dir.join(f);
        FileStamp::of(&p).map_err(crate::error::DaemonError::io("reading", &p))
    };
    let accel = app
        .backends
        .accel()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| "unknown".into());
    Ok(Binding {
        image_id: image.id.clone(),
        rootfs: stamp(img_files::ROOTFS)?,
        kernel: stamp(img_files::KERNEL)?,
        initrd: stamp(img_files::INITRD)?,
        vmm: vmm.to_string(),
        vmm_version: vmm_version(app, vmm).await,
        accel,
        cpus: shape.cpus,
        memory_mib: shape.memory_mib,
        disk_mib: shape.disk_mib,
        init: init_name(shape.init).to_string(),
        banger: banger_version(),
    })
}

/// The version line of the backend's binary (`qemu-system-x86_64 --version`'s first
/// line), asked once per daemon.
async fn vmm_version(app: &App, vmm: &str) -> String {
    static QEMU: OnceCell<String> = OnceCell::const_new();
    if vmm != "qemu" {
        return String::new();
    }
    let bin = app.config.qemu.clone();
    QEMU.get_or_init(|| async move {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::process::Command::new(&bin)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await;
        match out {
            Ok(Ok(o)) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            _ => "unknown".into(),
        }
    })
    .await
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Binding {
        let f = FileStamp {
            len: 1,
            ino: 2,
            mtime_ns: 3,
        };
        Binding {
            image_id: "img".into(),
            rootfs: f.clone(),
            kernel: f.clone(),
            initrd: f,
            vmm: "qemu".into(),
            vmm_version: "QEMU 7.2".into(),
            accel: "tcg".into(),
            cpus: 2,
            memory_mib: 1024,
            disk_mib: 4096,
            init: "agent".into(),
            banger: "0.1 abc".into(),
        }
    }

    #[test]
    fn any_change_of_what_a_snapshot_is_bound_to_is_seen() {
        assert_eq!(b().differs(&b()), None);
        type Change = Box<dyn Fn(&mut Binding)>;
        let changes: Vec<(Change, &str)> = vec![
            (Box::new(|x| x.image_id = "other".into()), "another image"),
            (Box::new(|x| x.rootfs.ino = 9), "the image's rootfs changed"),
            (Box::new(|x| x.kernel.len = 9), "the kernel changed"),
            (Box::new(|x| x.initrd.mtime_ns = 9), "the initrd changed"),
            (
                Box::new(|x| x.vmm_version = "QEMU 8".into()),
                "the VMM was upgraded",
            ),
            (Box::new(|x| x.accel = "kvm".into()), "another accelerator"),
            (Box::new(|x| x.cpus = 4), "other vCPUs"),
            (Box::new(|x| x.memory_mib = 2048), "other memory"),
            (Box::new(|x| x.disk_mib = 1), "another disk size"),
            (Box::new(|x| x.init = "systemd".into()), "another init mode"),
            (
                Box::new(|x| x.banger = "0.2 def".into()),
                "another banger version",
            ),
        ];
        for (change, why) in changes {
            let mut now = b();
            change(&mut now);
            assert_eq!(now.differs(&b()), Some(why));
        }
    }

    #[test]
    fn the_shape_round_trips_through_the_directory_name() {
        let s = b().shape();
        assert_eq!(s.dir_name(), "2c-1024m-4096d-agent");
    }
}
