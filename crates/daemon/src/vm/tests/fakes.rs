//! Fakes of the daemon's host-facing parts, sharing one [`World`] that records what
//! happened, in order, and can be told to fail at a named point.

use crate::app::{App, Parts};
use crate::config::Config;
use crate::error::{Cause, DaemonError, Result};
use crate::vm::backend::{Backends, Selected};
use crate::vm::disks::Disks;
use crate::vm::guest::{Guest, GuestError, Target};
use banger_channel::tokio::Session;
use banger_channel::Open;
use banger_helper::{HelperError, PrivOp, Privileged};
use banger_model::{ImageRecord, Layout, VmmChoice};
use banger_rpc::ProgressSink;
use banger_vmm::{Accel, Handles, MachineSpec, Vmm, VmmError};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a fake can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fail {
    /// Creating the overlay disk.
    Overlay,
    /// Creating the work disk.
    Work,
    /// `PrivOp::EnsureBridge`.
    Bridge,
    /// `PrivOp::CreateTap`.
    Tap,
    /// `PrivOp::IsolateTap`.
    Isolate,
    /// `Vmm::launch`.
    Launch,
    /// The agent never answers.
    Agent,
    /// The next boot's kernel stalls before init (the fail point then clears).
    StallOnce,
    /// Every boot's kernel stalls before init.
    Stall,
    /// The guest ignores the request to power off.
    Shutdown,
    /// The daemon has no way to privileged operations (not root, no helper).
    NoPrivilege,
    /// The VMM wants its tap as a descriptor (QEMU as the owner).
    TapFd,
}

#[derive(Default)]
struct State {
    fail: HashSet<Fail>,
    log: Vec<String>,
    taps: BTreeSet<String>,
    alive: BTreeSet<u32>,
    /// VMMs whose guest kernel stalled: their agent never answers.
    stalled: BTreeSet<u32>,
    /// Each launched VMM's runtime directory (what finds it without handles).
    runtime_dirs: std::collections::HashMap<u32, std::path::PathBuf>,
    next_pid: u32,
    /// The network of each launch, in order.
    nets: Vec<Option<banger_vmm::NetSpec>>,
}

/// The fake host and guests.
#[derive(Default)]
pub struct World {
    state: Mutex<State>,
}

impl World {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
    /// Make `point` fail from now on.
    pub fn fail(&self, point: Fail) {
        self.lock().fail.insert(point);
    }
    /// Stop failing anywhere.
    pub fn heal(&self) {
        self.lock().fail.clear();
    }
    fn fails(&self, point: Fail) -> bool {
        self.lock().fail.contains(&point)
    }
    fn record(&self, event: impl Into<String>) {
        self.lock().log.push(event.into());
    }
    /// Everything that happened, in order.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }
    /// Forget the log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }
    /// The network of each launch so far.
    pub fn nets(&self) -> Vec<Option<banger_vmm::NetSpec>> {
        self.lock().nets.clone()
    }
    /// Taps that exist now.
    pub fn taps(&self) -> BTreeSet<String> {
        self.lock().taps.clone()
    }
    /// VMMs running now.
    pub fn alive(&self) -> BTreeSet<u32> {
        self.lock().alive.clone()
    }
    /// The VMM `pid` dies behind the daemon's back.
    pub fn crash(&self, pid: u32) {
        self.lock().alive.remove(&pid);
    }
    /// A tap exists that no VM record names (a daemon died before recording it).
    pub fn stray_tap(&self, name: &str) {
        self.lock().taps.insert(name.to_string());
    }
}

/// Privileged operations: taps are a set, everything is logged.
pub struct FakePrivileged(pub Arc<World>);

fn helper_error(what: &str) -> HelperError {
    HelperError::BadTapName(format!("fake {what} failure"))
}

#[async_trait::async_trait]
impl Privileged for FakePrivileged {
    async fn run(&self, op: PrivOp) -> Result<(), HelperError> {
        let w = &self.0;
        match op {
            PrivOp::EnsureBridge { name, .. } => {
                if w.fails(Fail::Bridge) {
                    return Err(helper_error("bridge"));
                }
                w.record(format!("bridge {name}"));
            }
            PrivOp::CreateTap { name, .. } => {
                if w.fails(Fail::Tap) {
                    return Err(helper_error("tap"));
                }
                w.record(format!("create-tap {name}"));
                w.lock().taps.insert(name);
            }
            PrivOp::DeleteTap { name } => {
                if w.lock().taps.remove(&name) {
                    w.record(format!("delete-tap {name}"));
                }
            }
            PrivOp::EnableNat { .. } => w.record("nat"),
            PrivOp::DisableNat { .. } => w.record("nat-off"),
            PrivOp::EnableIsolation { .. } => w.record("isolation"),
            PrivOp::DisableIsolation { .. } => w.record("isolation-off"),
            PrivOp::IsolateTap { name, ip } => {
                if w.fails(Fail::Isolate) {
                    return Err(helper_error("isolate"));
                }
                w.record(format!("isolate-tap {name} {ip}"));
            }
            PrivOp::DeleteBridge { name, .. } => {
                if !w.lock().taps.is_empty() {
                    return Err(helper_error("bridge in use"));
                }
                w.record(format!("delete-bridge {name}"));
            }
        }
        Ok(())
    }

    async fn open_tap(&self, name: &str) -> Result<std::os::fd::OwnedFd, HelperError> {
        // A descriptor that is not a tap: the fake VMM never uses it.
        self.0.record(format!("open-tap {name}"));
        std::fs::File::open("/dev/null")
            .map(Into::into)
            .map_err(|_| helper_error("open-tap"))
    }

    async fn list_tap_names(&self) -> Result<Vec<String>, HelperError> {
        Ok(self.0.taps().into_iter().collect())
    }

    fn available(&self) -> Result<(), HelperError> {
        if self.0.fails(Fail::NoPrivilege) {
            return Err(HelperError::NoPrivilege {
                uid: 1000,
                system_socket: "/run/banger-helper/helper.sock".into(),
            });
        }
        Ok(())
    }
}

/// A VMM whose "process" is a pid in the world's live set; it leaves a socket and
/// a console log in the runtime directory, as real backends do.
pub struct FakeVmm(pub Arc<World>);

/// The fake's socket in a runtime directory.
pub const FAKE_SOCKET: &str = "fake.sock";

#[async_trait::async_trait]
impl Vmm for FakeVmm {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError> {
        if self.0.fails(Fail::Launch) {
            return Err(VmmError::Launch("fake launch failure".into()));
        }
        let rt = &spec.runtime_dir;
        std::fs::write(rt.join(FAKE_SOCKET), "").unwrap();
        let stall = self.0.lock().fail.remove(&Fail::StallOnce) || self.0.fails(Fail::Stall);
        let console = if stall {
            "fake kernel\nthen nothing\n".to_string()
        } else {
            format!(
                "fake boot\n{}\nlast line\n",
                banger_contract::console::INIT_STARTED
            )
        };
        std::fs::write(rt.join("console.log"), console).unwrap();
        let pid = {
            let mut s = self.0.lock();
            s.next_pid += 1;
            let pid = 1000 + s.next_pid;
            s.alive.insert(pid);
            if stall {
                s.stalled.insert(pid);
            }
            s.runtime_dirs.insert(pid, rt.clone());
            s.nets.push(spec.net.clone());
            pid
        };
        self.0
            .record(format!("launch {pid} disks={}", spec.disks.len()));
        Ok(Handles {
            backend: "fake".into(),
            pid,
            control_socket: rt.join(FAKE_SOCKET),
            agent_socket: rt.join(FAKE_SOCKET),
            console_log: rt.join("console.log"),
            accel: Accel::Tcg,
            start_time: None,
            tag: None,
        })
    }

    fn takes_tap_fd(&self) -> bool {
        self.0.fails(Fail::TapFd)
    }

    async fn launch_with_tap(
        &self,
        spec: &MachineSpec,
        tap: std::os::fd::OwnedFd,
    ) -> Result<Handles, VmmError> {
        use std::os::fd::AsRawFd;
        self.0
            .record(format!("launch-with-fd {}", tap.as_raw_fd() >= 0));
        self.launch(spec).await
    }

    async fn kill(&self, h: &Handles) -> Result<(), VmmError> {
        if self.0.lock().alive.remove(&h.pid) {
            self.0.record(format!("kill {}", h.pid));
        }
        Ok(())
    }

    fn is_alive(&self, h: &Handles, _vm_id: &str) -> bool {
        self.0.lock().alive.contains(&h.pid)
    }

    async fn wait_exit(&self, h: &Handles, _timeout: Duration) -> bool {
        !self.is_alive(h, "")
    }

    fn cleanup(&self, runtime_dir: &Path) {
        let _ = std::fs::remove_file(runtime_dir.join(FAKE_SOCKET));
    }

    async fn kill_orphans(&self, runtime_dir: &Path) -> usize {
        let mut s = self.0.lock();
        let found: Vec<u32> = s
            .alive
            .iter()
            .copied()
            .filter(|p| s.runtime_dirs.get(p).is_some_and(|d| d == runtime_dir))
            .collect();
        for p in &found {
            s.alive.remove(p);
            s.log.push(format!("kill-orphan {p}"));
        }
        found.len()
    }
}

/// Backends: always the fake VMM; an explicit Firecracker is refused, as on a host
/// without it.
pub struct FakeBackends(pub Arc<World>);

#[async_trait::async_trait]
impl Backends for FakeBackends {
    async fn check(&self, choice: VmmChoice, _: &Path, _: &ProgressSink) -> Result<()> {
        if choice == VmmChoice::Firecracker {
            self.0.record("refuse firecracker");
            return Err(DaemonError::BadRequest(
                "--vmm firecracker cannot be used here: fake".into(),
            ));
        }
        Ok(())
    }

    async fn select(&self, _: VmmChoice, image_dir: &Path, _: &ProgressSink) -> Result<Selected> {
        Ok(Selected {
            vmm: Box::new(FakeVmm(self.0.clone())),
            kernel: image_dir.join("vmlinuz"),
        })
    }

    fn accel_known(&self) -> bool {
        true
    }

    fn for_handles(&self, _: &Handles) -> Box<dyn Vmm> {
        Box::new(FakeVmm(self.0.clone()))
    }

    fn all(&self) -> Vec<Box<dyn Vmm>> {
        vec![Box::new(FakeVmm(self.0.clone()))]
    }
}

/// A guest that answers at once (or never, when told to fail).
pub struct FakeGuest(pub Arc<World>);

#[async_trait::async_trait]
impl Guest for FakeGuest {
    async fn agent_ready(&self, t: Target<'_>, _: Duration) -> Result<(), GuestError> {
        if self.0.lock().stalled.contains(&t.handles.pid) {
            std::future::pending::<()>().await;
        }
        if self.0.fails(Fail::Agent) {
            return Err(GuestError::Other("fake agent silence".into()));
        }
        self.0.record("agent ready");
        Ok(())
    }

    async fn shutdown(&self, t: Target<'_>) -> Result<(), GuestError> {
        self.0.record(format!("shutdown {}", t.name));
        if !self.0.fails(Fail::Shutdown) {
            // The guest powers off: its VMM exits.
            self.0.lock().alive.remove(&t.handles.pid);
        }
        Ok(())
    }

    async fn ports(&self, _: Target<'_>) -> Result<Vec<u16>, GuestError> {
        Ok(vec![22, 8080])
    }

    async fn open(&self, t: Target<'_>, _: &Open) -> Result<Session, GuestError> {
        self.0.record(format!("open {}", t.name));
        Err(GuestError::Other("the fake guest runs nothing".into()))
    }

    async fn host_key(&self, t: Target<'_>) -> Result<String, GuestError> {
        self.0.record(format!("host key {}", t.name));
        Ok("ssh-ed25519 AAAAguestreported root@guest\n".into())
    }

    fn forget(&self, _: &str) {}
}

/// Disks are small files.
pub struct FakeDisks(pub Arc<World>);

impl Disks for FakeDisks {
    fn create_overlay(&self, path: &Path, host_key: &Path) -> Result<(), Cause> {
        if self.0.fails(Fail::Overlay) {
            return Err("fake overlay failure".into());
        }
        std::fs::write(path, "overlay")?;
        std::fs::write(host_key, "ssh-ed25519 AAAAfakehostkey\n")?;
        self.0.record("overlay");
        Ok(())
    }

    fn create_work(&self, path: &Path, mib: u64, _: &Path, _: &str) -> Result<(), Cause> {
        if self.0.fails(Fail::Work) {
            return Err("fake work failure".into());
        }
        std::fs::write(path, format!("work {mib}"))?;
        self.0.record("work");
        Ok(())
    }

    fn grow(&self, path: &Path, mib: u64) -> Result<(), Cause> {
        std::fs::write(path, format!("work {mib}"))?;
        self.0.record(format!("grow {mib}"));
        Ok(())
    }
}

/// An app over a temporary state directory with fake parts and the default image
/// already published (so nothing builds), and the world behind the fakes.
pub fn app_with(config: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<App>, Arc<World>) {
    app_full(config, None)
}

/// [`app_with`] in rootless mode with `net` as the user-space stack.
pub fn app_full(
    config: impl FnOnce(&mut Config),
    rootless: Option<crate::vm::userspace::UserNet>,
) -> (tempfile::TempDir, Arc<App>, Arc<World>) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let mut cfg = Config::from_vars(|_| None).unwrap();
    cfg.boot_timeout = Duration::from_secs(30);
    // No real listener on the host: the fake guests need none.
    cfg.guest_dns = false;
    cfg.dns = None;
    config(&mut cfg);
    let store = banger_store::Store::open(&layout.db()).unwrap();
    let image = ImageRecord {
        id: "img0001".into(),
        name: banger_model::DEFAULT_IMAGE.into(),
        source: "test".into(),
        kernel_release: "6.1.0-test".into(),
        size_bytes: 1,
        created_at: 1,
        kernel: None,
        run_config: Default::default(),
    };
    store.insert_image(&image, &[]).unwrap();
    std::fs::create_dir_all(layout.image_dir(&image.id).join("work-seed")).unwrap();
    let world = Arc::new(World::default());
    let parts = Parts {
        privileged: Arc::new(FakePrivileged(world.clone())),
        backends: Arc::new(FakeBackends(world.clone())),
        guest: Arc::new(FakeGuest(world.clone())),
        disks: Arc::new(FakeDisks(world.clone())),
    };
    let mut app = App::new(layout, cfg, store, "ssh-ed25519 AAAA test".into(), parts);
    app.rootless = rootless;
    (dir, Arc::new(app), world)
}

/// [`app_with`] the default configuration, without the world.
pub fn app() -> (tempfile::TempDir, Arc<App>) {
    let (d, a, _) = app_with(|_| {});
    (d, a)
}
