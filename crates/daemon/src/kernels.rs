//! Kernel service: the local kernel store (`kernel import | list | show | rm`; pulls
//! from the catalog are in `catalog.rs`).
//!
//! A kernel is published like an image: prepared in `kernels/.staging/<id>`, then one
//! rename plus one row. Images copy (hard-link) the kernel and initrd they boot, so
//! removing a kernel never breaks an image, and an image keeps booting the exact
//! kernel it was made with.

use crate::app::App;
use crate::error::{blocking, Cause, DaemonError, Result};
use crate::publish::{check_name, link_or_copy, now, publish_dir, KernelFiles};
use banger_image::files;
use banger_image::kernel::{self, InitrdSource, PreparedKernel};
use banger_model::KernelRecord;
use banger_rpc::{KernelImportParams, ProgressSink};
use std::path::Path;

/// Prepare a kernel in a fresh staging directory with `prepare` (on a blocking
/// thread), then publish it under `name`. The staging directory is removed on any
/// failure.
pub(crate) async fn install(
    app: &App,
    name: &str,
    source: String,
    prepare: impl FnOnce(&Path) -> Result<PreparedKernel, Cause> + Send + 'static,
) -> Result<KernelRecord> {
    check_name(name)?;
    if app.db(|s| s.get_kernel_by_name(name)).is_ok() {
        return Err(DaemonError::AlreadyExists(format!(
            "a kernel named {name} already exists (see banger kernel list; remove it with banger kernel rm {name} or pick another --name)"
        )));
    }
    let id = banger_store::new_id();
    let staging = app.layout.kernel_staging().join(&id);
    let st = staging.clone();
    let what = format!("importing kernel {name}");
    let prepared = blocking("kernel import", move || {
        prepare(&st).map_err(DaemonError::build(what))
    })
    .await;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
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
    let publish = || -> Result<()> {
        let path = staging.join(files::MANIFEST);
        std::fs::write(&path, manifest.to_string())
            .map_err(DaemonError::io("writing the kernel manifest", &path))?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(DaemonError::io("creating", parent))?;
        }
        publish_dir(&staging, &dir).map_err(DaemonError::io("publishing the kernel to", &dir))?;
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
) -> Result<KernelRecord> {
    for path in [Some(&p.path), p.modules.as_ref(), p.initrd.as_ref()]
        .into_iter()
        .flatten()
    {
        if !path.is_absolute() {
            return Err(DaemonError::BadRequest(format!(
                "{} is not an absolute path (the CLI sends absolute paths; are you calling the RPC by hand?)",
                path.display()
            )));
        }
    }
    let bytes = std::fs::read(&p.path).map_err(|e| {
        DaemonError::BadRequest(format!("cannot read kernel {}: {e}", p.path.display()))
    })?;
    if kernel::format(&bytes).is_none() {
        return Err(DaemonError::BadRequest(
            kernel::KernelError::NotAKernel(p.path.clone()).to_string(),
        ));
    }
    let release = match p.release.clone().or_else(|| kernel::release(&bytes)) {
        Some(r) => r,
        None => {
            return Err(DaemonError::BadRequest(
                kernel::KernelError::NoRelease(p.path.clone()).to_string(),
            ))
        }
    };
    let name = p.name.clone().unwrap_or_else(|| release.clone());
    let initrd_from = match (&p.initrd, &p.modules) {
        (Some(_), Some(_)) => {
            return Err(DaemonError::BadRequest(
                "pass either --initrd or --modules, not both".into(),
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
            banger_image::debian::check_agent(&agent)?;
            Ok(kernel::prepare(
                staging,
                &path,
                Some(&release),
                &initrd_from,
                &agent,
            )?)
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
        std::fs::create_dir_all(staging)
            .map_err(|e| format!("create {}: {e}", staging.display()))?;
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
        tracing::warn!(kernel = %name, "could not add the image's kernel to the kernel store: {e}");
    }
}

/// The stored kernel `name`, as the files a new image links.
pub(crate) fn by_name(app: &App, name: &str) -> Result<KernelFiles> {
    let k = app.db(|s| s.get_kernel_by_name(name))?;
    Ok(files_of(app, k))
}

/// A stored kernel's files.
pub(crate) fn files_of(app: &App, k: KernelRecord) -> KernelFiles {
    KernelFiles {
        dir: app.layout.kernel_dir(&k.id),
        name: Some(k.name),
        release: k.release,
    }
}

/// `kernel.list`.
pub fn list(app: &App) -> Result<Vec<KernelRecord>> {
    app.db(|s| s.list_kernels())
}

/// `kernel.show`.
pub fn show(app: &App, name: &str) -> Result<KernelRecord> {
    app.db(|s| s.get_kernel_by_name(name))
}

/// `kernel.delete`: forget the kernel and remove its files. Images keep their copy.
pub fn delete(app: &App, name: &str) -> Result<()> {
    let k = app.db(|s| s.delete_kernel(name))?;
    let dir = app.layout.kernel_dir(&k.id);
    std::fs::remove_dir_all(&dir).map_err(DaemonError::io("removing", &dir))
}
