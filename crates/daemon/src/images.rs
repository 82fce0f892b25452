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
        return build(app, Some(name.to_string()), None, progress, true).await;
    }
    Err(RpcError::not_found(format!(
        "no image named {name} (see banger image list; build one with banger image build debian)"
    )))
}

/// Build a Debian image. With `reuse`, an existing image of that name is returned
/// instead of an `already_exists` error (the coalescing path of concurrent creates).
pub async fn build(
    app: &App,
    name: Option<String>,
    release: Option<String>,
    progress: &ProgressSink,
    reuse: bool,
) -> Result<ImageRecord, RpcError> {
    let release = release.unwrap_or_else(|| DEFAULT_RELEASE.to_string());
    let name = name.unwrap_or_else(|| format!("debian-{release}"));
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
        extra_packages: vec![],
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
    let dir = app.layout.image_dir(&id);
    let publish = || -> Result<ImageRecord, RpcError> {
        std::fs::rename(&built.dir, &dir).map_err(|e| {
            RpcError::operation_failed(format!(
                "publishing image {name} to {} failed: {e}",
                dir.display()
            ))
        })?;
        let rec = ImageRecord {
            id: id.clone(),
            name: name.clone(),
            source: built.source.clone(),
            kernel_release: built.kernel_release.clone(),
            size_bytes: built.size_bytes,
            created_at: now(),
        };
        app.db(|s| s.insert_image(&rec))?;
        Ok(rec)
    };
    match publish() {
        Ok(rec) => {
            tracing::info!(image = %name, ms = started.elapsed().as_millis() as u64, "image published");
            Ok(rec)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// All images.
pub fn list(app: &App) -> Result<Vec<ImageInfo>, RpcError> {
    Ok(app
        .db(|s| s.list_images())?
        .iter()
        .map(ImageInfo::from)
        .collect())
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
