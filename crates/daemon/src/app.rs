//! The daemon's shared state: layout, configuration, the store and the services'
//! coordination primitives. Services borrow it; nothing else is global.

use crate::config::Config;
use banger_helper::Privileged;
use banger_model::Layout;
use banger_rpc::RpcError;
use banger_store::{Store, StoreError};
use banger_vmm::{AccelChoice, Qemu};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// Image builds of the same name coalesce behind this lock.
    pub image_build: tokio::sync::Mutex<()>,
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
