//! The daemon's shared state: layout, configuration, the store, the host-facing parts
//! and the services' coordination primitives. Services borrow it; nothing else is
//! global.

use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::error::{DaemonError, Result};
use crate::ops::Operations;
use crate::privilege::Privilege;
use crate::vm::backend::{Backends, HostBackends};
use crate::vm::disks::{Disks, Ext4Disks};
use crate::vm::guest::{AgentGuest, Guest};
use banger_helper::Privileged;
use banger_model::{ImageRecord, KernelRecord, Layout};
use banger_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The parts of the daemon that touch the host or the guests. The real ones come
/// from [`Parts::host`]; unit tests put fakes here and run the services in-process
/// without root, VMMs or guests.
pub struct Parts {
    /// Root-only host operations: the root helper, in-process when the daemon runs as
    /// root without one, or refused (see [`crate::privilege`]).
    pub privileged: Arc<dyn Privileged>,
    /// VMM backends: selection, and rebuilding one from a VM's handles.
    pub backends: Arc<dyn Backends>,
    /// Talking to a booted guest (readiness, shutdown, ports).
    pub guest: Arc<dyn Guest>,
    /// Making and growing per-VM disks.
    pub disks: Arc<dyn Disks>,
}

impl Parts {
    /// The real parts for `config`, with privileged operations as `privilege` says.
    pub fn host(layout: &Layout, config: &Config, privilege: &Privilege) -> Parts {
        Parts {
            privileged: privilege.privileged(),
            backends: Arc::new(HostBackends::new(
                layout,
                config,
                privilege.helper().cloned(),
            )),
            guest: Arc::new(AgentGuest::new()),
            disks: Arc::new(Ext4Disks),
        }
    }
}

/// Shared daemon state.
pub struct App {
    /// Where everything lives.
    pub layout: Layout,
    /// What we were told.
    pub config: Config,
    /// SQLite state. Queries are sub-millisecond, so a plain mutex is enough.
    store: Mutex<Store>,
    /// Root-only host operations.
    pub privileged: Arc<dyn Privileged>,
    /// VMM backends.
    pub backends: Arc<dyn Backends>,
    /// Talking to guests.
    pub guest: Arc<dyn Guest>,
    /// Per-VM disks.
    pub disks: Arc<dyn Disks>,
    /// banger's public key line, installed into every work disk.
    pub public_key: String,
    /// One lock per VM name: operations on one VM serialise, others run in parallel.
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Debian builds (CPU- and mirror-heavy) run one at a time.
    pub image_build: tokio::sync::Mutex<()>,
    /// Requests that make the same image name share one run.
    pub images_in_flight: Coalescer<ImageRecord>,
    /// Catalog pulls of the same kernel share one run.
    pub kernels_in_flight: Coalescer<KernelRecord>,
    /// Pulls hold it shared while they download and record blobs; `image cache
    /// prune` holds it exclusively, so it never removes a blob a pull just fetched.
    pub blob_cache: tokio::sync::RwLock<()>,
    /// Whether banger's NAT table was installed by this daemon (once is enough: the
    /// rule names the bridge, not a tap).
    pub nat_ready: std::sync::atomic::AtomicBool,
    /// Whether banger's isolation tables were installed by this daemon (each tap
    /// still gets its own rules).
    pub isolation_ready: std::sync::atomic::AtomicBool,
    /// `<vm>.vm` for the host and the guests.
    pub dns: crate::dns::Dns,
    /// Serialises rewrites of the ssh files (`ssh_files::refresh`).
    pub ssh_files: Mutex<()>,
    /// Long calls in flight, for `banger operations`.
    pub ops: Operations,
    /// The exclusive lock on the state directory ([`crate::open`] takes it; tests
    /// with fakes run without one). Held, never read: dropping it releases it.
    pub state_lock: Option<banger_rpc::StateLock>,
    /// Listeners of published ports, per running VM.
    pub forwards: crate::vm::forward::Forwards,
    /// VM state changes, for `events.watch`.
    pub events: crate::events::Events,
    /// Rootless mode's user-space network stack (docs/rootless.md); `None` with a
    /// bridge (root or the root helper).
    pub rootless: Option<crate::vm::userspace::UserNet>,
    /// One lock per image id for its warm snapshots: making and removing them hold it
    /// exclusively, a restore shared (from checking the files until the VMM has loaded
    /// the state), so a snapshot is never replaced under a restore.
    warm_locks: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl App {
    /// Assemble the state.
    pub fn new(
        layout: Layout,
        config: Config,
        store: Store,
        public_key: String,
        parts: Parts,
    ) -> Self {
        let dns = crate::dns::Dns::new(config.resolv_conf.clone(), config.guest_dns);
        Self {
            layout,
            config,
            store: Mutex::new(store),
            privileged: parts.privileged,
            backends: parts.backends,
            guest: parts.guest,
            disks: parts.disks,
            public_key,
            vm_locks: Mutex::new(HashMap::new()),
            image_build: tokio::sync::Mutex::new(()),
            images_in_flight: Coalescer::default(),
            kernels_in_flight: Coalescer::default(),
            blob_cache: tokio::sync::RwLock::new(()),
            nat_ready: std::sync::atomic::AtomicBool::new(false),
            isolation_ready: std::sync::atomic::AtomicBool::new(false),
            dns,
            ssh_files: Mutex::new(()),
            ops: Operations::default(),
            state_lock: None,
            forwards: Default::default(),
            events: Default::default(),
            rootless: None,
            warm_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Run `f` with the store locked.
    pub fn db<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T> {
        let guard = self.store.lock().map_err(|_| {
            DaemonError::BadRequest(
                "the state database lock is poisoned by an earlier crash; restart bangerd".into(),
            )
        })?;
        Ok(f(&guard)?)
    }

    /// The lock of image `id`'s warm snapshots.
    pub fn warm_lock(&self, id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut m = self.warm_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    /// The lock for VM `name`.
    pub fn vm_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.vm_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
}
