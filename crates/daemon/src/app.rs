//! The daemon's shared state: layout, configuration, the store and the services'
//! coordination primitives. Services borrow it; nothing else is global.

use crate::coalesce::Coalescer;
use crate::config::Config;
use banger_helper::Privileged;
use banger_model::{ImageRecord, KernelRecord, Layout};
use banger_rpc::{OperationInfo, RpcError};
use banger_store::{Store, StoreError};
use banger_vmm::{AccelChoice, Qemu};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::OnceCell;

/// Shared daemon state.
pub struct App {
    /// Where everything lives.
    pub layout: Layout,
    /// What we were told.
    pub config: Config,
    /// SQLite state. Queries are sub-millisecond, so a plain mutex is enough.
    pub store: Mutex<Store>,
    /// Root-only host operations (in-process when the daemon runs as root).
    pub privileged: Arc<dyn Privileged>,
    /// banger's public key line, installed into every work disk.
    pub public_key: String,
    /// The QEMU backend, built on first use (the accelerator probe needs a kernel).
    pub qemu: OnceCell<(Qemu, AccelChoice)>,
    /// One lock per VM name: create/delete of the same VM serialise, others run in parallel.
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
    /// Long calls in flight, for `banger operations`.
    pub ops: Operations,
}

/// Registry of long-running calls (create, start, stop, image build).
#[derive(Default)]
pub struct Operations {
    inner: Mutex<HashMap<String, (String, String, String, Instant)>>,
}

/// Removes its operation from the registry when dropped (success, error or cancel).
pub struct OpGuard<'a> {
    ops: &'a Operations,
    op_id: String,
}

impl Operations {
    /// Register `op_id` running `method` on `target`.
    pub fn begin(&self, op_id: &str, method: &str, target: &str) -> OpGuard<'_> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(
            op_id.to_string(),
            (
                method.to_string(),
                target.to_string(),
                "starting".to_string(),
                Instant::now(),
            ),
        );
        OpGuard {
            ops: self,
            op_id: op_id.to_string(),
        }
    }

    /// Record the stage `op_id` has reached.
    pub fn stage(&self, op_id: &str, stage: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(op_id) {
            e.2 = stage.to_string();
        }
    }

    /// Everything in flight, oldest first.
    pub fn list(&self) -> Vec<OperationInfo> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<OperationInfo> = m
            .iter()
            .map(|(id, (method, target, stage, t))| OperationInfo {
                op_id: id.clone(),
                method: method.clone(),
                target: target.clone(),
                stage: stage.clone(),
                elapsed_ms: t.elapsed().as_millis() as u64,
            })
            .collect();
        v.sort_by_key(|o| std::cmp::Reverse(o.elapsed_ms));
        v
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let mut m = self.ops.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.op_id);
    }
}

impl App {
    /// Assemble the state.
    pub fn new(
        layout: Layout,
        config: Config,
        store: Store,
        privileged: Arc<dyn Privileged>,
        public_key: String,
    ) -> Self {
        Self {
            layout,
            config,
            store: Mutex::new(store),
            privileged,
            public_key,
            qemu: OnceCell::new(),
            vm_locks: Mutex::new(HashMap::new()),
            image_build: tokio::sync::Mutex::new(()),
            images_in_flight: Coalescer::default(),
            kernels_in_flight: Coalescer::default(),
            blob_cache: tokio::sync::RwLock::new(()),
            nat_ready: std::sync::atomic::AtomicBool::new(false),
            ops: Operations::default(),
        }
    }

    /// Run `f` with the store locked.
    pub fn db<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, RpcError> {
        let guard = self.store.lock().map_err(|_| {
            RpcError::operation_failed("the state database lock is poisoned; restart bangerd")
        })?;
        f(&guard).map_err(store_error)
    }

    /// The lock for VM `name`.
    pub fn vm_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.vm_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }
}

/// Map store errors onto RPC error codes; the store's messages already say what to do.
pub fn store_error(e: StoreError) -> RpcError {
    if e.is_not_found() {
        RpcError::not_found(e.to_string())
    } else if e.is_name_taken() {
        RpcError::already_exists(e.to_string())
    } else {
        RpcError::operation_failed(e.to_string())
    }
}
