//! Image service: build, list, and the default image built on first need.
//!
//! A build runs in `images/.staging/<id>` and is published by one rename plus one
//! row: a build that fails or a daemon killed half-way leaves only staging debris,
//! which [`sweep_staging`] removes on the next start. Builds are serialised; a caller
//! that waited for a build of the same name reuses its result.

use crate::app::App;
use banger_image::{BuildRequest, BuiltImage};
use banger_model::ImageRecord;
use banger_rpc::{ImageInfo, ProgressSink, RpcError};
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

fn check_name(name: &str) -> Result<(), RpcError> {
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
    let _guard = app.image_build.lock().await;
    if let Ok(existing) = app.db(|s| s.get_image_by_name(&name)) {
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
        release: release.clone(),
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
    publish(app, &id, &name, &built, started)
}

/// Move a finished staging directory into place and record it: one rename plus one
/// row, undone together if either fails.
fn publish(
    app: &App,
    id: &str,
    name: &str,
    built: &BuiltImage,
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
        };
        app.db(|s| s.insert_image(&rec))?;
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

/// `image pull REF`: an OCI image from any registry, flattened into a banger base
/// image. OCI images carry no kernel, so the guest boots the kernel and initrd of the
/// default Debian image (built first if needed); the image itself must have systemd
/// and an OpenSSH server (banger boots systemd and reaches guests over ssh).
pub async fn pull(
    app: &App,
    reference: String,
    name: Option<String>,
    progress: &ProgressSink,
) -> Result<ImageRecord, RpcError> {
    use banger_image::oci;
    let name = name.unwrap_or_else(|| name_for_reference(&reference));
    check_name(&name)?;
    oci::parse_reference(&reference).map_err(|e| RpcError::bad_request(e.to_string()))?;
    // Resolve the kernel donor first: it may itself need a build (and the build lock).
    let donor = resolve(app, banger_model::DEFAULT_IMAGE, progress).await?;
    let _guard = app.image_build.lock().await;
    if app.db(|s| s.get_image_by_name(&name)).is_ok() {
        return Err(RpcError::already_exists(format!(
            "an image named {name} already exists (see banger image list; pick another with --name)"
        )));
    }
    let started = Instant::now();
    let cache = oci::BlobCache::new(app.layout.cache.join("blobs"));
    let opts = oci::PullOptions {
        plain_http: plain_http_hosts(&reference),
        ..Default::default()
    };
    let sink = progress.clone();
    let pulled = oci::fetch(&reference, &cache, &opts, &mut |ev| {
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

    let id = banger_store::new_id();
    let staging = app.layout.image_staging().join(&id);
    let (agent, donor_dir, sink) = (
        app.config.agent.clone(),
        app.layout.image_dir(&donor.id),
        progress.clone(),
    );
    let (st, refer, kernel_release) = (
        staging.clone(),
        reference.clone(),
        donor.kernel_release.clone(),
    );
    let built = tokio::task::spawn_blocking(move || -> Result<BuiltImage, String> {
        std::fs::create_dir_all(st.join("tree")).map_err(|e| format!("create {}: {e}", st.display()))?;
        let mut tree = oci::apply_pulled(&pulled, &st.join("tree"), oci::ApplyOptions::default(), &mut |i, _| {
            sink.send("image:apply", Some(format!("layer {}", i + 1)))
        })
        .map_err(|e| e.to_string())?;
        sink.send("image:customize", None);
        banger_image::customize::apply(&tree.root, &agent).map_err(|e| e.to_string())?;
        let seed = st.join(banger_image::files::WORK_SEED);
        let mut ed = oci::TreeEditor::open(&tree.root).map_err(|e| e.to_string())?;
        // symlink_metadata does not follow `root` itself, and its parent is ours.
        if std::fs::symlink_metadata(tree.root.join("root")).is_ok_and(|m| m.is_dir()) {
            std::fs::rename(tree.root.join("root"), &seed).map_err(|e| format!("move /root: {e}"))?;
            let _ = tree.fixups.split_off("root");
        } else {
            let _ = ed.remove("root");
            std::fs::create_dir_all(&seed).map_err(|e| e.to_string())?;
        }
        ed.create_dir_all("root", 0o700).map_err(|e| e.to_string())?;
        sink.send("image:ext4", None);
        let rootfs = st.join(banger_image::files::ROOTFS);
        let info = oci::build_rootfs(&tree, &rootfs, banger_image::LABEL_ROOT).map_err(|e| e.to_string())?;
        std::fs::remove_dir_all(&tree.root).map_err(|e| format!("remove the unpacked tree: {e}"))?;
        for f in [banger_image::files::KERNEL, banger_image::files::INITRD] {
            let (from, to) = (donor_dir.join(f), st.join(f));
            std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                .map_err(|e| format!("copy the kernel {}: {e}", from.display()))?;
        }
        let built = BuiltImage { dir: st.clone(), kernel_release, size_bytes: info.size_bytes, source: format!("oci:{refer}") };
        let manifest = serde_json::json!({ "source": built.source, "kernel_release": built.kernel_release, "kernel_from": "default image", "config": pulled_config_json(&pulled) });
        std::fs::write(st.join(banger_image::files::MANIFEST), manifest.to_string()).map_err(|e| e.to_string())?;
        Ok(built)
    })
    .await
    .map_err(|e| RpcError::operation_failed(format!("image pull task failed: {e}")))?;
    match built {
        Ok(b) => publish(app, &id, &name, &b, started),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(RpcError::operation_failed(format!(
                "turning {reference} into image {name} failed: {e}"
            )))
        }
    }
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
    let _guard = app.image_build.lock().await;
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

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
