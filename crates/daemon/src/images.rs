//! Image service: build, pull, register, promote, list, delete, cache prune, and the
//! default image built on first need.
//!
//! Every way of making an image prepares it in `images/.staging/<id>` and publishes
//! it by one rename plus one row: a failure or a daemon killed half-way leaves only
//! staging debris, which [`sweep_staging`] removes on the next start.
//!
//! Concurrent requests that would produce the same image name coalesce
//! ([`Coalescer`]): the first does the work, the others wait and get its result.
//! Different names proceed in parallel; only Debian builds (CPU- and mirror-heavy)
//! are serialised.

use crate::app::App;
use banger_image::{BuildRequest, BuiltImage};
use banger_model::ImageRecord;
use banger_rpc::{CachePruneResult, ImageInfo, ImagePullParams, ProgressSink, RpcError};
use std::time::Instant;

/// Default Debian release for `image build debian`.
pub const DEFAULT_RELEASE: &str = "bookworm";

/// Remove leftovers of interrupted builds.
pub fn sweep_staging(app: &App) {
    let staging = app.layout.image_staging();
    if staging.exists() {
        tracing::info!(path = %staging.display(), "removing leftovers of interrupted image builds");
        let _ = std::fs::remove_dir_all(&staging);
    }
}

/// Return the image called `name`, building it first if it is the default image.
pub async fn resolve(
    app: &App,
    name: &str,
    progress: &ProgressSink,
) -> Result<ImageRecord, RpcError> {
    if let Ok(img) = app.db(|s| s.get_image_by_name(name)) {
        return Ok(img);
    }
    if name == banger_model::DEFAULT_IMAGE {
        progress.send(
            "image",
            Some(format!(
                "{name} is not built yet: building it now (takes a few minutes, once)"
            )),
        );
        return build(app, Some(name.to_string()), None, vec![], progress, true).await;
    }
    Err(RpcError::not_found(format!(
        "no image named {name} (see banger image list; build one with banger image build debian)"
    )))
}

/// Image and kernel names: what fits a file name and a table cell.
pub(crate) fn check_name(name: &str) -> Result<(), RpcError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(RpcError::bad_request(format!(
            "image name {name:?} may only contain letters, digits, '-', '.' and '_'"
        )));
    }
    Ok(())
}

/// Build a Debian image. With `reuse`, an existing image of that name is returned
/// instead of an `already_exists` error (the coalescing path of concurrent creates).
pub async fn build(
    app: &App,
    name: Option<String>,
    release: Option<String>,
    packages: Vec<String>,
    progress: &ProgressSink,
    reuse: bool,
) -> Result<ImageRecord, RpcError> {
    let release = release.unwrap_or_else(|| DEFAULT_RELEASE.to_string());
    let name = name.unwrap_or_else(|| format!("debian-{release}"));
    check_name(&name)?;
    if let Ok(existing) = app.db(|s| s.get_image_by_name(&name)) {
        if reuse {
            return Ok(existing);
        }
        return Err(RpcError::already_exists(format!(
            "an image named {name} already exists (see banger image list)"
        )));
    }
    app.images_in_flight
        .run(&name, progress, || {
            build_now(app, &name, &release, packages.clone(), progress, reuse)
        })
        .await
}

async fn build_now(
    app: &App,
    name: &str,
    release: &str,
    packages: Vec<String>,
    progress: &ProgressSink,
    reuse: bool,
) -> Result<ImageRecord, RpcError> {
    let _guard = app.image_build.lock().await;
    if let Ok(existing) = app.db(|s| s.get_image_by_name(name)) {
        if reuse {
            return Ok(existing);
        }
        return Err(RpcError::already_exists(format!(
            "an image named {name} already exists (see banger image list)"
        )));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RpcError::operation_failed(
            "building a Debian image needs root for now (mmdebstrap writes files owned by root); run bangerd as root",
        ));
    }
    let id = banger_store::new_id();
    let staging = app.layout.image_staging().join(&id);
    let req = BuildRequest {
        release: release.to_string(),
        extra_packages: packages,
        mirror: app.config.debian_mirror.clone(),
        agent: app.config.agent.clone(),
        staging: staging.clone(),
    };
    let started = Instant::now();
    let sink = progress.clone();
    let built = tokio::task::spawn_blocking(move || {
        banger_image::build_debian(&req, &mut |stage, detail| {
            sink.send(format!("image:{stage}"), detail)
        })
    })
    .await
    .map_err(|e| RpcError::operation_failed(format!("image build task failed: {e}")))?;
    let built: BuiltImage = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(RpcError::operation_failed(format!(
                "building image {name} failed: {e}"
            )));
        }
    };
    // The image's own kernel joins the kernel store under the image's name.
    let rec = publish(app, &id, name, &built, Some(name), &[], started)?;
    crate::kernels::adopt_from_image(app, name, &app.layout.image_dir(&id), &built.kernel_release)
        .await;
    Ok(rec)
}

/// Move a finished staging directory into place and record it: one rename plus one
/// row, undone together if either fails.
pub(crate) fn publish(
    app: &App,
    id: &str,
    name: &str,
    built: &BuiltImage,
    kernel: Option<&str>,
    blobs: &[String],
    started: Instant,
) -> Result<ImageRecord, RpcError> {
    let dir = app.layout.image_dir(id);
    let run = || -> Result<ImageRecord, RpcError> {
        std::fs::rename(&built.dir, &dir).map_err(|e| {
            RpcError::operation_failed(format!(
                "publishing image {name} to {} failed: {e}",
                dir.display()
            ))
        })?;
        let rec = ImageRecord {
            id: id.to_string(),
            name: name.to_string(),
            source: built.source.clone(),
            kernel_release: built.kernel_release.clone(),
            size_bytes: built.size_bytes,
            created_at: now(),
            kernel: kernel.map(str::to_string),
        };
        app.db(|s| s.insert_image(&rec, blobs))?;
        Ok(rec)
    };
    match run() {
        Ok(rec) => {
            tracing::info!(image = %name, ms = started.elapsed().as_millis() as u64, "image published");
            Ok(rec)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&built.dir);
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// A default image name for an OCI reference: `registry/ns/debian:bookworm` → `debian-bookworm`.
pub fn name_for_reference(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let (repo, tag) = last.split_once(':').unwrap_or((last, "latest"));
    let raw = format!("{repo}-{tag}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Registries on the loopback interface speak plain HTTP (a local test or cache
/// registry); everything else must use TLS.
fn plain_http_hosts(reference: &str) -> Vec<String> {
    let host = reference.split('/').next().unwrap_or_default();
    let bare = host.split(':').next().unwrap_or_default();
    if reference.contains('/') && matches!(bare, "localhost" | "127.0.0.1" | "[::1]") {
        vec![host.to_string()]
    } else {
        vec![]
    }
}

/// `image.pull`: a catalog name or an OCI reference. A second pull of a name that
/// exists from the same source returns the existing image; concurrent pulls of the
/// same name coalesce.
pub async fn pull(
    app: &App,
    p: ImagePullParams,
    progress: &ProgressSink,
) -> Result<ImageRecord, RpcError> {
    if crate::catalog::is_catalog_name(&p.reference) {
        return crate::catalog::pull_image(app, p, progress).await;
    }
    let reference = p.reference;
    let name = p.name.unwrap_or_else(|| name_for_reference(&reference));
    check_name(&name)?;
    banger_image::oci::parse_reference(&reference)
        .map_err(|e| RpcError::bad_request(e.to_string()))?;
    let source = format!("oci:{reference}");
    if let Some(existing) = existing_from(app, &name, &source)? {
        progress.send("image", Some(format!("{name} is already pulled")));
        return Ok(existing);
    }
    let kernel = p.kernel;
    app.images_in_flight
        .run(&name, progress, || async {
            if let Some(existing) = existing_from(app, &name, &source)? {
                return Ok(existing);
            }
            pull_oci(app, &reference, &name, kernel.as_deref(), progress).await
        })
        .await
}

/// The image `name` if it exists and came from `source`; an error if it exists
/// but came from elsewhere.
pub(crate) fn existing_from(
    app: &App,
    name: &str,
    source: &str,
) -> Result<Option<ImageRecord>, RpcError> {
    match app.db(|s| s.get_image_by_name(name)) {
        Ok(img) if img.source == source => Ok(Some(img)),
        Ok(img) => Err(RpcError::already_exists(format!(
            "an image named {name} already exists (from {}); delete it first or pick another name with --name",
            img.source
        ))),
        Err(_) => Ok(None),
    }
}

/// OCI images carry no kernel, so the guest boots a kernel from the store (the
/// default image's unless `--kernel` names one); the image itself must have
/// systemd and an OpenSSH server (banger boots systemd and reaches guests over ssh).
async fn pull_oci(
    app: &App,
    reference: &str,
    name: &str,
    kernel: Option<&str>,
    progress: &ProgressSink,
) -> Result<ImageRecord, RpcError> {
    use banger_image::oci;
    // Resolve the kernel first: the default one may itself need an image build.
    let kernel = crate::kernels::for_new_image(app, kernel, progress).await?;
    let _cache = app.blob_cache.read().await;
    let started = Instant::now();
    let cache = oci::BlobCache::new(app.layout.blob_cache());
    let mut opts = oci::PullOptions {
        plain_http: plain_http_hosts(reference),
        ..Default::default()
    };
    opts.limits.max_compressed = opts
        .limits
        .max_compressed
        .min(app.config.max_download_bytes);
    let sink = progress.clone();
    let pulled = oci::fetch(reference, &cache, &opts, &mut |ev| {
        let detail = match ev {
            oci::PullEvent::Resolved { layers, bytes, .. } => {
                format!("{layers} layers, {:.1} MiB", bytes as f64 / 1048576.0)
            }
            oci::PullEvent::LayerCached { index, .. } => format!("layer {} cached", index + 1),
            oci::PullEvent::LayerFetched { index, bytes, .. } => format!(
                "layer {} fetched ({:.1} MiB)",
                index + 1,
                bytes as f64 / 1048576.0
            ),
        };
        sink.send("image:pull", Some(detail));
    })
    .await
    .map_err(|e| RpcError::operation_failed(format!("pulling {reference} failed: {e}")))?;
    let blobs: Vec<String> = pulled
        .layers
        .iter()
        .map(|(_, d)| d.digest.clone())
        .collect();

    let id = banger_store::new_id();
    let staging = app.layout.image_staging().join(&id);
    let (agent, sink, st) = (app.config.agent.clone(), progress.clone(), staging.clone());
    let (source, kfiles) = (format!("oci:{reference}"), kernel.clone());
    let built = tokio::task::spawn_blocking(move || -> Result<BuiltImage, String> {
        std::fs::create_dir_all(st.join("tree"))
            .map_err(|e| format!("create {}: {e}", st.display()))?;
        let tree = oci::apply_pulled(
            &pulled,
            &st.join("tree"),
            oci::ApplyOptions::default(),
            &mut |i, _| sink.send("image:apply", Some(format!("layer {}", i + 1))),
        )
        .map_err(|e| e.to_string())?;
        let config = pulled_config_json(&pulled);
        finish_tree(tree, &st, &agent, &kfiles, &source, config, &sink)
    })
    .await
    .map_err(|e| RpcError::operation_failed(format!("image pull task failed: {e}")))?;
    match built {
        Ok(b) => publish(app, &id, name, &b, kernel.name.as_deref(), &blobs, started),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(RpcError::operation_failed(format!(
                "turning {reference} into image {name} failed: {e}"
            )))
        }
    }
}

/// Turn an applied tree in `staging/tree` into a publishable image directory:
/// banger's customisation, /root moved out as the work seed, ext4 without mounting,
/// the kernel and initrd linked in, and a manifest. Shared by every pull path,
/// register and promote, so they all produce the same kind of image.
pub(crate) fn finish_tree(
    mut tree: banger_image::oci::AppliedTree,
    staging: &std::path::Path,
    agent: &std::path::Path,
    kernel: &crate::kernels::KernelFiles,
    source: &str,
    config: serde_json::Value,
    sink: &ProgressSink,
) -> Result<BuiltImage, String> {
    use banger_image::oci;
    sink.send("image:customize", None);
    banger_image::customize::apply(&tree.root, agent).map_err(|e| e.to_string())?;
    let seed = staging.join(banger_image::files::WORK_SEED);
    let mut ed = oci::TreeEditor::open(&tree.root).map_err(|e| e.to_string())?;
    // symlink_metadata does not follow `root` itself, and its parent is ours.
    if std::fs::symlink_metadata(tree.root.join("root")).is_ok_and(|m| m.is_dir()) {
        std::fs::rename(tree.root.join("root"), &seed).map_err(|e| format!("move /root: {e}"))?;
        let _ = tree.fixups.split_off("root");
    } else {
        let _ = ed.remove("root");
        std::fs::create_dir_all(&seed).map_err(|e| e.to_string())?;
    }
    ed.create_dir_all("root", 0o700)
        .map_err(|e| e.to_string())?;
    sink.send("image:ext4", None);
    let rootfs = staging.join(banger_image::files::ROOTFS);
    let info =
        oci::build_rootfs(&tree, &rootfs, banger_image::LABEL_ROOT).map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(&tree.root).map_err(|e| format!("remove the unpacked tree: {e}"))?;
    for f in [banger_image::files::KERNEL, banger_image::files::INITRD] {
        let (from, to) = (kernel.dir.join(f), staging.join(f));
        crate::kernels::link_or_copy(&from, &to)
            .map_err(|e| format!("copy the kernel {}: {e}", from.display()))?;
    }
    let built = BuiltImage {
        dir: staging.to_path_buf(),
        kernel_release: kernel.release.clone(),
        size_bytes: info.size_bytes,
        source: source.to_string(),
    };
    let manifest = serde_json::json!({
        "source": built.source,
        "kernel_release": built.kernel_release,
        "kernel": kernel.name,
        "config": config,
    });
    std::fs::write(
        staging.join(banger_image::files::MANIFEST),
        manifest.to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok(built)
}

fn pulled_config_json(p: &banger_image::oci::PulledImage) -> serde_json::Value {
    serde_json::json!({
        "env": p.config.env,
        "cmd": p.config.cmd,
        "entrypoint": p.config.entrypoint,
        "working_dir": p.config.working_dir,
        "user": p.config.user,
    })
}

/// `image.delete`: refuse while a VM uses it.
pub async fn delete(app: &App, name: &str) -> Result<(), RpcError> {
    let img = app.db(|s| s.get_image_by_name(name))?;
    app.db(|s| s.delete_image(&img.id))?;
    let dir = app.layout.image_dir(&img.id);
    std::fs::remove_dir_all(&dir).map_err(|e| {
        RpcError::operation_failed(format!("removing {} failed: {e}", dir.display()))
    })?;
    Ok(())
}

/// `image.show`.
pub fn show(app: &App, name: &str) -> Result<ImageInfo, RpcError> {
    app.db(|s| s.get_image_by_name(name))
}

/// All images.
pub fn list(app: &App) -> Result<Vec<ImageInfo>, RpcError> {
    app.db(|s| s.list_images())
}

/// `image.cache_prune`: remove cached blobs no image was made from. Holds the cache
/// exclusively, so a pull in progress never loses a blob it just fetched.
pub async fn cache_prune(app: &App, dry_run: bool) -> Result<CachePruneResult, RpcError> {
    let _cache = app.blob_cache.write().await;
    let keep: std::collections::HashSet<String> =
        app.db(|s| s.referenced_blobs())?.into_iter().collect();
    let cache = banger_image::oci::BlobCache::new(app.layout.blob_cache());
    let report = cache
        .prune(&keep, dry_run)
        .map_err(|e| RpcError::operation_failed(format!("pruning the blob cache failed: {e}")))?;
    let kept = keep
        .iter()
        .filter(|d| cache.path(d).is_ok_and(|p| p.exists()))
        .count() as u64;
    Ok(CachePruneResult {
        blobs: report.blobs,
        bytes: report.bytes,
        kept,
        dry_run,
    })
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
