//! Kernel service: the local kernel store (`kernel import | pull | list | show | rm`)
//! and the choice of kernel for new images.
//!
//! A kernel is published like an image: prepared in `kernels/.staging/<id>`, then one
//! rename plus one row. Images copy (hard-link) the kernel and initrd they boot, so
//! removing a kernel never breaks an image, and an image keeps booting the exact
//! kernel it was made with.

use crate::app::App;
use crate::images::{check_name, now};
use banger_image::files;
use banger_image::kernel::{self, InitrdSource, PreparedKernel};
use banger_model::KernelRecord;
use banger_rpc::{KernelImportParams, ProgressSink, RpcError};
use std::path::{Path, PathBuf};

/// Remove leftovers of interrupted imports.
pub fn sweep_staging(app: &App) {
    let staging = app.layout.kernel_staging();
    if staging.exists() {
        tracing::info!(path = %staging.display(), "removing leftovers of interrupted kernel imports");
        let _ = std::fs::remove_dir_all(&staging);
    }
}

/// Hard-link `from` to `to`, copying when they are on different filesystems.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// Prepare a kernel in a fresh staging directory with `prepare`, then publish it
/// under `name`. The staging directory is removed on any failure.
pub(crate) async fn install(
    app: &App,
    name: &str,
    source: String,
    prepare: impl FnOnce(&Path) -> Result<PreparedKernel, String> + Send + 'static,
) -> Result<KernelRecord, RpcError> {
    check_name(name)?;
    if app.db(|s| s.get_kernel_by_name(name)).is_ok() {
        return Err(RpcError::already_exists(format!(
            "a kernel named {name} already exists (see banger kernel list; remove it with banger kernel rm {name} or pick another --name)"
        )));
    }
    let id = banger_store::new_id();
    let staging = app.layout.kernel_staging().join(&id);
    let st = staging.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&st))
        .await
        .map_err(|e| RpcError::operation_failed(format!("kernel import task failed: {e}")))?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(RpcError::operation_failed(format!(
                "importing kernel {name} failed: {e}"
            )));
        }
    };
    let rec = KernelRecord {
        id: id.clone(),
        name: name.to_string(),
        release: prepared.release.clone(),
        source,
        size_bytes: prepared.size_bytes,
        created_at: now(),
    };
    let manifest = serde_json::json!({
        "name": rec.name, "release": rec.release, "source": rec.source, "initrd_modules": prepared.modules,
    });
    let dir = app.layout.kernel_dir(&id);
    let publish = || -> Result<(), RpcError> {
        std::fs::write(staging.join(files::MANIFEST), manifest.to_string())
            .map_err(|e| RpcError::operation_failed(format!("writing the kernel manifest: {e}")))?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                RpcError::operation_failed(format!("creating {}: {e}", parent.display()))
            })?;
        }
        std::fs::rename(&staging, &dir).map_err(|e| {
            RpcError::operation_failed(format!(
                "publishing kernel {name} to {} failed: {e}",
                dir.display()
            ))
        })?;
        app.db(|s| s.insert_kernel(&rec))
    };
    if let Err(e) = publish() {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    tracing::info!(kernel = %name, release = %rec.release, "kernel published");
    Ok(rec)
}

/// `kernel.import`: a kernel file from this host, with banger's initrd built for it.
pub async fn import(
    app: &App,
    p: KernelImportParams,
    progress: &ProgressSink,
) -> Result<KernelRecord, RpcError> {
    for path in [Some(&p.path), p.modules.as_ref(), p.initrd.as_ref()]
        .into_iter()
        .flatten()
    {
        if !path.is_absolute() {
            return Err(RpcError::bad_request(format!(
                "{} is not an absolute path (the CLI sends absolute paths; are you calling the RPC by hand?)",
                path.display()
            )));
        }
    }
    let bytes = std::fs::read(&p.path).map_err(|e| {
        RpcError::bad_request(format!("cannot read kernel {}: {e}", p.path.display()))
    })?;
    if kernel::format(&bytes).is_none() {
        return Err(RpcError::bad_request(
            kernel::KernelError::NotAKernel(p.path.clone()).to_string(),
        ));
    }
    let release = match p.release.clone().or_else(|| kernel::release(&bytes)) {
        Some(r) => r,
        None => {
            return Err(RpcError::bad_request(
                kernel::KernelError::NoRelease(p.path.clone()).to_string(),
            ))
        }
    };
    let name = p.name.clone().unwrap_or_else(|| release.clone());
    let initrd_from = match (&p.initrd, &p.modules) {
        (Some(_), Some(_)) => {
            return Err(RpcError::bad_request(
                "pass either --initrd or --modules, not both",
            ))
        }
        (Some(f), None) => InitrdSource::File(f.clone()),
        (None, Some(m)) => InitrdSource::Modules(m.clone()),
        (None, None) => {
            progress.send(
                "kernel",
                Some(
                    "no --modules: assuming virtio, ext4 and overlay are built into the kernel"
                        .into(),
                ),
            );
            InitrdSource::BuiltIn
        }
    };
    progress.send("kernel:initrd", Some(format!("release {release}")));
    let (agent, path) = (app.config.agent.clone(), p.path.clone());
    install(
        app,
        &name,
        format!("file:{}", p.path.display()),
        move |staging| {
            banger_image::debian::check_agent(&agent).map_err(|e| e.to_string())?;
            kernel::prepare(staging, &path, Some(&release), &initrd_from, &agent)
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// After a Debian build: the image's own kernel becomes kernel `name` in the store
/// (hard links, no copy), so `image pull --kernel NAME` and `image register` can use
/// it. Best effort: an existing kernel of that name is left alone.
pub(crate) async fn adopt_from_image(app: &App, name: &str, image_dir: &Path, release: &str) {
    if app.db(|s| s.get_kernel_by_name(name)).is_ok() {
        return;
    }
    let (dir, rel) = (image_dir.to_path_buf(), release.to_string());
    let res = install(app, name, format!("image:{name}"), move |staging| {
        std::fs::create_dir_all(staging).map_err(|e| e.to_string())?;
        for f in [files::KERNEL, files::INITRD] {
            link_or_copy(&dir.join(f), &staging.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        let size_bytes = std::fs::metadata(staging.join(files::KERNEL))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(PreparedKernel {
            release: rel,
            size_bytes,
            modules: 0,
        })
    })
    .await;
    if let Err(e) = res {
        tracing::warn!(kernel = %name, "could not add the image's kernel to the kernel store: {}", e.message);
    }
}

/// The kernel files a new image gets.
#[derive(Debug, Clone)]
pub(crate) struct KernelFiles {
    /// Directory holding [`files::KERNEL`] and [`files::INITRD`].
    pub dir: PathBuf,
    /// Kernel store name, when it came from the store.
    pub name: Option<String>,
    /// Kernel release.
    pub release: String,
}

/// The kernel `name`, or the default kernel (that of the default image, built first
/// if needed) when `name` is `None`.
pub(crate) async fn for_new_image(
    app: &App,
    name: Option<&str>,
    progress: &ProgressSink,
) -> Result<KernelFiles, RpcError> {
    if let Some(name) = name {
        let k = app.db(|s| s.get_kernel_by_name(name))?;
        return Ok(KernelFiles {
            dir: app.layout.kernel_dir(&k.id),
            name: Some(k.name),
            release: k.release,
        });
    }
    let default = banger_model::DEFAULT_IMAGE;
    if let Ok(k) = app.db(|s| s.get_kernel_by_name(default)) {
        return Ok(KernelFiles {
            dir: app.layout.kernel_dir(&k.id),
            name: Some(k.name),
            release: k.release,
        });
    }
    let donor = crate::images::resolve(app, default, progress).await?;
    Ok(KernelFiles {
        dir: app.layout.image_dir(&donor.id),
        name: donor.kernel.clone(),
        release: donor.kernel_release,
    })
}

/// `kernel.list`.
pub fn list(app: &App) -> Result<Vec<KernelRecord>, RpcError> {
    app.db(|s| s.list_kernels())
}

/// `kernel.show`.
pub fn show(app: &App, name: &str) -> Result<KernelRecord, RpcError> {
    app.db(|s| s.get_kernel_by_name(name))
}

/// `kernel.delete`: forget the kernel and remove its files. Images keep their copy.
pub fn delete(app: &App, name: &str) -> Result<(), RpcError> {
    let k = app.db(|s| s.delete_kernel(name))?;
    let dir = app.layout.kernel_dir(&k.id);
    std::fs::remove_dir_all(&dir)
        .map_err(|e| RpcError::operation_failed(format!("removing {} failed: {e}", dir.display())))
}
