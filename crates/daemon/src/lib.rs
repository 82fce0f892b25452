//! `bangerd`, banger's owner daemon, as a library: state, orchestration and every
//! unprivileged step. The `bangerd` binary (`main.rs`) only parses its arguments,
//! sets up logging and calls [`open`] then [`serve`].
//!
//! Layout of the crate:
//! * [`app`]: the shared state ([`App`]) and the host-facing [`Parts`] (privileged
//!   operations, VMM backends, guests, disks), which tests replace with fakes;
//! * [`routes`]: the method table, where errors become the wire's;
//! * [`vm`]: the VM service, one file per verb;
//! * [`images`], [`catalog`], [`kernels`], [`flatten`]: images and kernels, over
//!   [`publish`] (what they share, so none depends on another in a circle);
//! * [`dns`] (`<vm>.vm` for the host and the guests), [`network`] (`network show`
//!   and `down`), [`ssh_files`] (the known_hosts and ssh_config banger keeps);
//! * [`privilege`]: the root helper, in-process (root) or nothing, decided at start;
//!   [`perms`]: banger's files private to the owner;
//! * [`error`], [`config`], [`failpoint`], [`coalesce`], [`ops`], [`handles`].
//!
//! Concurrency, in one place: each VM has a lock held for the whole of any operation
//! on it (`App::vm_lock`); requests producing the same image or kernel name coalesce
//! ([`coalesce`]); Debian builds run one at a time; the blob cache is a read-write
//! lock (pulls read, prune writes); the monitor ([`vm::reconcile::monitor`]) skips
//! VMs whose lock is held.

pub mod app;
pub mod catalog;
pub mod coalesce;
pub mod config;
pub mod dns;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod flatten;
pub mod handles;
pub mod images;
pub mod kernels;
pub mod network;
pub mod ops;
pub mod perms;
pub mod privilege;
pub mod publish;
pub mod routes;
pub mod ssh_files;
pub mod vm;
pub mod warm;

pub use app::{App, Parts};
pub use config::Config;
pub use error::DaemonError;

use banger_model::Layout;
use banger_store::Store;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration (environment) is invalid.
    #[error("reading the configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// A state directory could not be created.
    #[error("creating {}: {source}; check that its parent is writable by this user", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon uses the state directory (or its lock file is unusable).
    #[error("{0}")]
    Lock(#[from] banger_rpc::LockError),
    /// The state database could not be opened.
    #[error("opening the state database: {0}")]
    Store(#[from] banger_store::StoreError),
    /// banger's ssh key could not be made or read.
    #[error("preparing banger's ssh key: {0}")]
    Key(#[from] banger_guest::keys::KeyError),
    /// The root helper the daemon was pointed at does not answer or refused.
    #[error("asking the root helper for its bridge and subnet: {0}")]
    Helper(#[from] banger_helper::HelperError),
    /// The daemon socket could not be opened.
    #[error("opening the daemon socket: {0}")]
    Bind(#[from] banger_rpc::BindError),
    /// The method table is inconsistent (a bug).
    #[error("building the method table: {0}")]
    Router(#[from] banger_rpc::RouterError),
}

/// Open the daemon's state under `layout` with the real host parts: decide who
/// carries out privileged operations (with a helper, its bridge and subnet replace
/// the configured ones), create the directories and make existing ones private.
///
/// The state directory is locked first (before the database, the sweeps and
/// reconcile touch it): a second daemon on the same state would sweep the first
/// one's builds as debris and adopt its VMs, so it is refused, naming the pid that
/// holds the lock. The lock lives as long as the returned [`App`].
pub fn open(layout: Layout) -> Result<Arc<App>, StartError> {
    let mut config = Config::from_env()?;
    let privilege = privilege::Privilege::from_env();
    tracing::info!("privileged operations: {}", privilege.describe());
    if let Some(helper) = privilege.helper() {
        let net = privilege::helper_network(helper, privilege::HELPER_WAIT)?;
        if (net.bridge.as_str(), net.subnet) != (config.bridge.as_str(), config.subnet) {
            tracing::info!(bridge = %net.bridge, subnet = %net.subnet, "using the helper's bridge and subnet");
        }
        config.bridge = net.bridge;
        config.subnet = net.subnet;
    }
    for d in [&layout.state, &layout.cache, &layout.runtime] {
        std::fs::create_dir_all(d).map_err(|source| StartError::Dir {
            path: d.clone(),
            source,
        })?;
    }
    let lock = banger_rpc::lock_state_dir(&layout.state)?;
    perms::tighten(&layout);
    let store = Store::open(&layout.db())?;
    let public_key = banger_guest::keys::ensure(&layout.ssh_key())?;
    let rootless = privilege.rootless().then(vm::userspace::UserNet::detect);
    if let Some(net) = &rootless {
        // No bridge: nothing to isolate or masquerade; each VM's stack does both.
        config.isolation = false;
        config.nat = false;
        tracing::info!("rootless mode: guest networking through {}", net.describe());
    }
    let parts = Parts::host(&layout, &config, &privilege);
    let mut app = App::new(layout, config, store, public_key, parts);
    app.state_lock = Some(lock);
    app.rootless = rootless;
    Ok(Arc::new(app))
}

/// Clean up after earlier daemons, re-adopt running VMs, then serve RPC on the
/// daemon socket until `shutdown` resolves. Running VMs keep running afterwards.
///
/// At the end the socket is removed only if its path still names the socket this
/// daemon bound: an old daemon stopping late never unlinks a newer one's socket.
pub async fn serve(app: Arc<App>, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    publish::sweep_staging(&app);
    publish::sweep_orphans(&app);
    publish::sweep_blob_temps(&app);
    flatten::sweep(&app);
    warm::make::sweep(&app.layout.warm_dir());
    app.dns.start_host(app.config.dns);
    if app.rootless.is_none() {
        app.dns
            .ensure_guests(app.privileged.as_ref(), app.config.subnet.gateway())
            .await;
    }
    vm::reconcile::reconcile(&app).await;
    ssh_files::refresh(&app);
    vm::host_key::pin_missing(app.clone());
    tokio::spawn(vm::reconcile::monitor(app.clone()));

    let socket = app.layout.socket();
    let (listener, owner) = banger_rpc::bind_owned(&socket)?;
    let router = Arc::new(routes::router(app.clone())?);
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "bangerd ready");
    banger_rpc::serve(listener, router, shutdown).await;
    owner.remove();
    Ok(())
}
