//! VMM backends: choosing one, rebuilding one from a VM's handles, and the runtime
//! files each leaves. The only place in the daemon that names QEMU or Firecracker.
//!
//! Choosing needs two facts that cost time, each learnt at most once per need:
//! * the accelerator (KVM or TCG), decided by booting a probe guest
//!   (`banger_vmm::accel::choose`, cached per host boot in `accel.json`). It runs once
//!   per daemon, and only when a choice needs it: QEMU does (KVM or TCG arguments),
//!   Firecracker does (it needs KVM), but an explicit `--vmm firecracker` whose
//!   binary is missing, broken or unsupported is refused before any probe;
//! * whether Firecracker is usable (banger-hostcheck's policy, the one `banger doctor`
//!   reports): `firecracker --version` runs on a blocking thread with a timeout, never
//!   on the async executor.
//!
//! With a root helper, Firecracker guests are launched by the helper through the
//! jailer ([`banger_helper::JailedFirecracker`]); QEMU runs as the daemon's user and
//! gets its tap as a descriptor (`Vmm::takes_tap_fd`).

use crate::config::Config;
use crate::error::{blocking, DaemonError, Result};
use banger_helper::{HelperClient, JailedFirecracker};
use banger_hostcheck::firecracker::{self as fc_policy, Unusable};
use banger_image::files as img_files;
use banger_model::{Layout, VmmChoice};
use banger_rpc::ProgressSink;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::{Accel, AccelChoice, Handles, Qemu, Vmm};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::OnceCell;

/// A chosen backend and the kernel file it boots.
pub struct Selected {
    /// The backend.
    pub vmm: Box<dyn Vmm>,
    /// The kernel to boot: the image's bzImage (QEMU) or the ELF vmlinux extracted
    /// from it (Firecracker).
    pub kernel: PathBuf,
}

/// What the VM services need from the backends. [`HostBackends`] is the real one;
/// unit tests use a fake.
#[async_trait::async_trait]
pub trait Backends: Send + Sync {
    /// Refuse an explicit `choice` that cannot run here, before anything is created.
    async fn check(
        &self,
        choice: VmmChoice,
        image_dir: &Path,
        progress: &ProgressSink,
    ) -> Result<()>;
    /// The backend for a VM of `choice` booting the image (or kernel) in `image_dir`.
    async fn select(
        &self,
        choice: VmmChoice,
        image_dir: &Path,
        progress: &ProgressSink,
    ) -> Result<Selected>;
    /// Whether the accelerator is decided already. When it is not, `select` may boot
    /// a probe guest first (seconds), which a start shows as its own stage.
    fn accel_known(&self) -> bool;
    /// The accelerator QEMU uses here, once decided (warm snapshots are bound to it).
    fn accel(&self) -> Option<Accel> {
        None
    }
    /// A backend able to stop, watch and clean up the VM behind `handles`, launched
    /// by this daemon or any earlier one.
    fn for_handles(&self, handles: &Handles) -> Box<dyn Vmm>;
    /// Every backend: to clean up a runtime directory whose handles are lost.
    fn all(&self) -> Vec<Box<dyn Vmm>>;
}

/// The backends of this host.
pub struct HostBackends {
    qemu_binary: String,
    firecracker_binary: String,
    forced_accel: Option<Accel>,
    accel_cache: PathBuf,
    scratch: PathBuf,
    /// QEMU with the probed accelerator and measured TSC rate, decided once.
    qemu: OnceCell<(Qemu, AccelChoice)>,
    /// The root helper, which launches Firecracker guests through the jailer.
    helper: Option<HelperClient>,
}

impl HostBackends {
    /// Backends as `config` names them; the probe's scratch files and verdict cache
    /// go into `layout`'s runtime directory. With `helper`, Firecracker guests are
    /// jailed by it.
    pub fn new(layout: &Layout, config: &Config, helper: Option<HelperClient>) -> Self {
        Self {
            qemu_binary: config.qemu.clone(),
            firecracker_binary: config.firecracker.clone(),
            forced_accel: config.accel,
            accel_cache: layout.accel_cache(),
            scratch: layout.runtime.clone(),
            qemu: OnceCell::new(),
            helper,
        }
    }

    fn firecracker(&self) -> Firecracker {
        Firecracker {
            binary: self.firecracker_binary.clone(),
            ..Firecracker::default()
        }
    }

    /// The Firecracker backend new guests get: jailed by the helper when there is one.
    fn firecracker_vmm(&self) -> Box<dyn Vmm> {
        match &self.helper {
            Some(h) => Box::new(JailedFirecracker {
                helper: h.clone(),
                firecracker: self.firecracker(),
            }),
            None => Box::new(self.firecracker()),
        }
    }

    /// QEMU, deciding the accelerator on first use by probing with `image_dir`'s
    /// kernel. A TCG verdict is shown to the user once per call that uses it.
    async fn qemu(&self, image_dir: &Path) -> (Qemu, AccelChoice) {
        let (q, choice) = self
            .qemu
            .get_or_init(|| async {
                let _ = std::fs::create_dir_all(&self.scratch);
                let choice = banger_vmm::accel::choose(
                    &self.qemu_binary,
                    &image_dir.join(img_files::KERNEL),
                    &image_dir.join(img_files::INITRD),
                    &self.scratch,
                    Some(&self.accel_cache),
                    self.forced_accel,
                )
                .await;
                tracing::info!(accel = choice.accel.as_str(), reason = %choice.reason, "accelerator chosen");
                let tsc_khz = tokio::task::spawn_blocking(|| {
                    banger_vmm::tsc::measure_khz(Duration::from_millis(100))
                })
                .await
                .unwrap_or(0);
                let q = Qemu {
                    binary: self.qemu_binary.clone(),
                    accel: choice.accel,
                    tsc_khz,
                };
                (q, choice)
            })
            .await;
        (q.clone(), choice.clone())
    }

    /// banger-hostcheck's Firecracker policy. The binary is checked first, so a
    /// missing or unsupported Firecracker is refused without probing KVM.
    async fn firecracker_usable(&self, image_dir: &Path) -> Result<(), Unusable> {
        let bin = self.firecracker_binary.clone();
        let probe = tokio::task::spawn_blocking(move || fc_policy::probe(&bin))
            .await
            .map_err(|e| Unusable::Broken(format!("checking its version failed: {e}")))?;
        // The binary's own verdict, assuming KVM works.
        fc_policy::usable(&probe, Some(Accel::Kvm))?;
        let (_, choice) = self.qemu(image_dir).await;
        fc_policy::usable(&probe, Some(choice.accel)).map(|_| ())
    }
}

/// The refusal of an explicit `--vmm firecracker`.
fn refuse_firecracker(why: Unusable) -> DaemonError {
    DaemonError::BadRequest(format!(
        "--vmm firecracker cannot be used here: {why}; use --vmm qemu or --vmm auto"
    ))
}

#[async_trait::async_trait]
impl Backends for HostBackends {
    async fn check(
        &self,
        choice: VmmChoice,
        image_dir: &Path,
        _progress: &ProgressSink,
    ) -> Result<()> {
        match choice {
            VmmChoice::Firecracker => self
                .firecracker_usable(image_dir)
                .await
                .map_err(refuse_firecracker),
            // QEMU runs everywhere; auto falls back to it.
            VmmChoice::Qemu | VmmChoice::Auto => Ok(()),
        }
    }

    async fn select(
        &self,
        choice: VmmChoice,
        image_dir: &Path,
        progress: &ProgressSink,
    ) -> Result<Selected> {
        let firecracker = match choice {
            VmmChoice::Qemu => false,
            VmmChoice::Auto => self.firecracker_usable(image_dir).await.is_ok(),
            VmmChoice::Firecracker => {
                self.firecracker_usable(image_dir)
                    .await
                    .map_err(refuse_firecracker)?;
                true
            }
        };
        let bz = image_dir.join(img_files::KERNEL);
        if !firecracker {
            let (q, accel) = self.qemu(image_dir).await;
            if accel.accel == Accel::Tcg {
                progress.send("accel", Some(accel.reason));
            }
            return Ok(Selected {
                vmm: Box::new(q),
                kernel: bz,
            });
        }
        let kernel = blocking("kernel extraction", move || {
            banger_image::vmlinux::vmlinux_path(&bz)
                .map_err(DaemonError::build("extracting the kernel for Firecracker"))
        })
        .await?;
        Ok(Selected {
            vmm: self.firecracker_vmm(),
            kernel,
        })
    }

    fn accel_known(&self) -> bool {
        self.qemu.initialized()
    }

    fn accel(&self) -> Option<Accel> {
        self.qemu.get().map(|(q, _)| q.accel)
    }

    fn for_handles(&self, h: &Handles) -> Box<dyn Vmm> {
        if h.backend == self.firecracker().name() {
            // Only jailed guests carry a tag (their `--id`); the others were started
            // unjailed by a root daemon.
            match (&self.helper, h.tag.is_some()) {
                (Some(_), true) => self.firecracker_vmm(),
                _ => Box::new(self.firecracker()),
            }
        } else {
            Box::new(Qemu {
                binary: self.qemu_binary.clone(),
                accel: h.accel,
                tsc_khz: 0,
            })
        }
    }

    fn all(&self) -> Vec<Box<dyn Vmm>> {
        vec![
            Box::new(Qemu {
                binary: self.qemu_binary.clone(),
                accel: Accel::Tcg,
                tsc_khz: 0,
            }),
            // A jailed guest always has handles (written right after its launch), and
            // a stale jail is replaced by the VM's next launch.
            Box::new(self.firecracker()),
        ]
    }
}
