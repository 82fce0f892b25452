//! Catalog pulls: `image pull NAME` and `kernel pull NAME` resolve NAME in the JSON
//! index at `BANGER_CATALOG`, download the artifacts into the verified blob cache
//! (exact size and sha256 before anything is unpacked), then build the image or
//! kernel through the same hardened paths as OCI pulls.

use crate::app::App;
use crate::error::{blocking, Cause, DaemonError, Result};
use crate::kernels;
use crate::publish::{check_name, existing_from, finish_tree, publish};
use banger_image::catalog::{self, Artifact, CatalogIndex, KernelEntry};
use banger_image::kernel::InitrdSource;
use banger_image::oci::{self, BlobCache, Compression, LayerDescriptor};
use banger_image::BuiltImage;
use banger_model::{ImageRecord, KernelRecord};
use banger_rpc::{CatalogItem, CatalogListing, ImagePullParams, ProgressSink};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Whether `reference` names a catalog entry rather than an OCI image: a bare name
/// (`debian-bookworm`). OCI references have a registry, a tag or a digest
/// (`docker.io/library/debian:bookworm`, `debian:bookworm`).
pub fn is_catalog_name(reference: &str) -> bool {
    !reference.contains(['/', ':', '@'])
}

fn location(app: &App) -> Result<String> {
    app.config.catalog.clone().ok_or_else(|| {
        DaemonError::BadRequest(
            "no catalog is configured, so bare names cannot be pulled: set BANGER_CATALOG to the URL or path of a catalog index (see docs/catalog.md), or pull an OCI image by reference, e.g. docker.io/library/debian:bookworm".into(),
        )
    })
}

async fn index(app: &App) -> Result<CatalogIndex> {
    let loc = location(app)?;
    catalog::fetch_index(&loc)
        .await
        .map_err(DaemonError::build(format!("reading the catalog {loc}")))
}

/// A catalog error: unknown names are `not_found`, the rest failures of `what`.
fn catalog_error(what: &str) -> impl FnOnce(catalog::CatalogError) -> DaemonError + '_ {
    move |e| {
        use catalog::CatalogError as E;
        match e {
            E::UnknownImage { .. } | E::UnknownKernel { .. } => {
                DaemonError::NotFound(e.to_string())
            }
            other => DaemonError::build(what)(other),
        }
    }
}

/// `catalog.list`: what `pull NAME` can fetch (empty when no catalog is configured).
pub async fn listing(app: &App) -> Result<CatalogListing> {
    let Some(loc) = app.config.catalog.clone() else {
        return Ok(CatalogListing::default());
    };
    let idx = index(app).await?;
    Ok(CatalogListing {
        location: Some(loc),
        images: idx
            .images()
            .iter()
            .map(|i| CatalogItem {
                name: i.name.clone(),
                description: i.description.clone(),
                detail: i.kernel.clone(),
                size_bytes: i.rootfs.size,
            })
            .collect(),
        kernels: idx
            .kernels()
            .iter()
            .map(|k| CatalogItem {
                name: k.name.clone(),
                description: k.description.clone(),
                detail: k.release.clone(),
                size_bytes: k.kernel.size + k.modules.as_ref().map_or(0, |m| m.size),
            })
            .collect(),
    })
}

/// Download `artifact` into the blob cache, reporting progress in 10 % steps.
async fn fetch(
    app: &App,
    what: &str,
    artifact: &Artifact,
    progress: &ProgressSink,
) -> Result<PathBuf> {
    let cache = BlobCache::new(app.layout.blob_cache());
    let failed = format!("downloading the catalog's {what}");
    let (sink, what) = (progress.clone(), what.to_string());
    let mut last = u64::MAX;
    let mut report = move |got: u64, total: u64| {
        let pct = got.saturating_mul(100) / total.max(1);
        if last == u64::MAX || pct / 10 != last / 10 {
            last = pct;
            sink.send(
                "download",
                Some(format!(
                    "{what}: {:.1} of {:.1} MiB",
                    got as f64 / 1048576.0,
                    total as f64 / 1048576.0
                )),
            );
        }
    };
    catalog::download(artifact, &cache, app.config.max_download_bytes, &mut report)
        .await
        .map_err(catalog_error(&failed))
}

/// A layer descriptor for a verified catalog tarball, compression read from its magic.
fn tar_descriptor(blob: &Path, artifact: &Artifact) -> Result<LayerDescriptor, Cause> {
    let mut head = [0u8; 8];
    let n = std::fs::File::open(blob)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("read {}: {e}", blob.display()))?;
    let media_type = match Compression::from_magic(&head[..n]) {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    };
    Ok(LayerDescriptor {
        media_type: media_type.to_string(),
        digest: artifact.digest(),
        size: artifact.size,
    })
}

/// Unpack a verified tarball into `dest` through the no-follow applier (catalog
/// content is as untrusted as any registry layer).
fn unpack(blob: &Path, artifact: &Artifact, dest: &Path) -> Result<oci::AppliedTree, Cause> {
    let desc = tar_descriptor(blob, artifact)?;
    std::fs::create_dir_all(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    let mut a = oci::Applier::new(dest, oci::ApplyOptions::default())?;
    a.apply_layer(blob, &desc)?;
    Ok(a.finish()?)
}

/// `kernel.pull`.
pub async fn pull_kernel(app: &App, name: &str, progress: &ProgressSink) -> Result<KernelRecord> {
    let idx = index(app).await?;
    let entry = idx
        .kernel(name)
        .map_err(catalog_error("the catalog"))?
        .clone();
    if let Ok(k) = app.db(|s| s.get_kernel_by_name(name)) {
        if k.source == kernel_source(&entry) {
            progress.send("kernel", Some(format!("{name} is already pulled")));
            return Ok(k);
        }
        return Err(DaemonError::AlreadyExists(format!(
            "a kernel named {name} already exists (from {}); remove it first with banger kernel rm {name}",
            k.source
        )));
    }
    ensure_kernel(app, &entry, progress).await
}

fn kernel_source(entry: &KernelEntry) -> String {
    format!("catalog:{}@{}", entry.name, &entry.kernel.sha256[..12])
}

/// The stored kernel named like `entry`, if any; an error if it is a different
/// kernel (another release), since an image built for one release must not silently
/// boot another.
fn local_kernel(app: &App, entry: &KernelEntry) -> Result<Option<KernelRecord>> {
    match app.db(|s| s.get_kernel_by_name(&entry.name)) {
        Ok(k) if k.release == entry.release => Ok(Some(k)),
        Ok(k) => Err(DaemonError::AlreadyExists(format!(
            "the kernel store has a kernel named {} with release {}, but the catalog's is {}; remove it (banger kernel rm {}) or pick a kernel with --kernel",
            k.name, k.release, entry.release, k.name
        ))),
        Err(_) => Ok(None),
    }
}

/// The catalog kernel `entry`, from the store if a kernel of that name is there,
/// downloaded and imported otherwise. Concurrent pulls of one kernel coalesce.
async fn ensure_kernel(
    app: &App,
    entry: &KernelEntry,
    progress: &ProgressSink,
) -> Result<KernelRecord> {
    if let Some(k) = local_kernel(app, entry)? {
        return Ok(k);
    }
    app.kernels_in_flight
        .run(&entry.name, progress, || async {
            if let Some(k) = local_kernel(app, entry)? {
                return Ok(k);
            }
            let _cache = app.blob_cache.read().await;
            let kernel_blob = fetch(app, "kernel", &entry.kernel, progress).await?;
            let modules = match &entry.modules {
                Some(m) => Some((fetch(app, "modules", m, progress).await?, m.clone())),
                None => None,
            };
            progress.send("kernel:initrd", Some(format!("release {}", entry.release)));
            let (agent, release) = (app.config.agent.clone(), entry.release.clone());
            kernels::install(app, &entry.name, kernel_source(entry), move |staging| {
                banger_image::debian::check_agent(&agent)?;
                let tree = staging.join("modules-tree");
                let from = match &modules {
                    Some((blob, art)) => InitrdSource::Modules(unpack(blob, art, &tree)?.root),
                    None => InitrdSource::BuiltIn,
                };
                let prepared = banger_image::kernel::prepare(
                    staging,
                    &kernel_blob,
                    Some(&release),
                    &from,
                    &agent,
                )?;
                let _ = std::fs::remove_dir_all(&tree);
                Ok(prepared)
            })
            .await
        })
        .await
}

/// `image.pull NAME` for a catalog name.
pub async fn pull_image(
    app: &App,
    p: ImagePullParams,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    let idx = index(app).await?;
    let entry = idx
        .image(&p.reference)
        .map_err(catalog_error("the catalog"))?
        .clone();
    let name = p.name.clone().unwrap_or_else(|| entry.name.clone());
    check_name(&name)?;
    let source = format!("catalog:{}@{}", entry.name, &entry.rootfs.sha256[..12]);
    if let Some(existing) = existing_from(app, &name, &source)? {
        progress.send("image", Some(format!("{name} is already pulled")));
        return Ok(existing);
    }
    app.images_in_flight
        .run(&name, progress, || async {
            if let Some(existing) = existing_from(app, &name, &source)? {
                return Ok(existing);
            }
            let started = Instant::now();
            let kernel = match p.kernel.as_deref() {
                Some(k) => kernels::by_name(app, k)?,
                None => {
                    let kentry = idx
                        .kernel(&entry.kernel)
                        .map_err(catalog_error("the catalog"))?;
                    let k = ensure_kernel(app, kentry, progress).await?;
                    kernels::files_of(app, k)
                }
            };
            let _cache = app.blob_cache.read().await;
            let blob = fetch(app, "rootfs", &entry.rootfs, progress).await?;
            let id = banger_store::new_id();
            let staging = app.layout.image_staging().join(&id);
            let (agent, sink, st) = (app.config.agent.clone(), progress.clone(), staging.clone());
            let (art, kfiles, src) = (entry.rootfs.clone(), kernel.clone(), source.clone());
            let desc = entry.description.clone();
            let what = format!("turning catalog image {} into image {name}", entry.name);
            let built = blocking("image pull", move || {
                let run = || -> Result<BuiltImage, Cause> {
                    sink.send("image:apply", Some("rootfs".into()));
                    let tree = unpack(&blob, &art, &st.join("tree"))?;
                    let config = serde_json::json!({ "description": desc });
                    finish_tree(tree, &st, &agent, &kfiles, &src, config, &sink)
                };
                run().map_err(DaemonError::build(what))
            })
            .await;
            match built {
                Ok(b) => publish(
                    app,
                    &id,
                    &name,
                    &b,
                    kernel.name.as_deref(),
                    &[entry.rootfs.digest()],
                    started,
                ),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Err(e)
                }
            }
        })
        .await
}
