//! Image service: build, pull (OCI registries; catalog names go to `catalog.rs`),
//! list, show, delete, cache prune, the default image built on first need, and the
//! kernel a new image boots.
//!
//! Every way of making an image ends in `publish::finish_tree` and
//! `publish::publish`. Concurrent requests that would produce the same image name
//! coalesce ([`crate::coalesce::Coalescer`]): the first does the work, the others
//! wait and get its result. Different names proceed in parallel; only Debian builds
//! (CPU- and mirror-heavy) are serialised.

use crate::app::App;
use crate::error::{blocking, Cause, DaemonError, Result};
use crate::publish::{check_name, existing_from, finish_tree, publish, KernelFiles};
use crate::{catalog, kernels};
use banger_image::{oci, BuildRequest, BuiltImage};
use banger_model::ImageRecord;
use banger_rpc::{CachePruneResult, ImageInfo, ImagePullParams, ProgressSink};
use std::time::Instant;

/// Default Debian release for `image build debian`.
pub const DEFAULT_RELEASE: &str = "bookworm";

/// Return the image called `name`, building it first if it is the default image.
pub async fn resolve(app: &App, name: &str, progress: &ProgressSink) -> Result<ImageRecord> {
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
    Err(DaemonError::NotFound(format!(
        "no image named {name} (see banger image list; build one with banger image build debian)"
    )))
}

/// The kernel a new image boots: kernel `name` from the store, or the default kernel
/// (that of the default image, built first if needed) when `name` is `None`.
pub(crate) async fn kernel_for_new_image(
    app: &App,
    name: Option<&str>,
    progress: &ProgressSink,
) -> Result<KernelFiles> {
    if let Some(name) = name {
        return kernels::by_name(app, name);
    }
    let default = banger_model::DEFAULT_IMAGE;
    if let Ok(k) = kernels::by_name(app, default) {
        return Ok(k);
    }
    let donor = resolve(app, default, progress).await?;
    Ok(KernelFiles {
        dir: app.layout.image_dir(&donor.id),
        name: donor.kernel.clone(),
        release: donor.kernel_release,
    })
}

fn taken(name: &str) -> DaemonError {
    DaemonError::AlreadyExists(format!(
        "an image named {name} already exists (see banger image list)"
    ))
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
) -> Result<ImageRecord> {
    let release = release.unwrap_or_else(|| DEFAULT_RELEASE.to_string());
    let name = name.unwrap_or_else(|| format!("debian-{release}"));
    check_name(&name)?;
    if let Ok(existing) = app.db(|s| s.get_image_by_name(&name)) {
        return if reuse {
            Ok(existing)
        } else {
            Err(taken(&name))
        };
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
) -> Result<ImageRecord> {
    let _guard = app.image_build.lock().await;
    if let Ok(existing) = app.db(|s| s.get_image_by_name(name)) {
        return if reuse {
            Ok(existing)
        } else {
            Err(taken(name))
        };
    }
    // Any user builds: root directly, everyone else in mmdebstrap's unshare mode
    // (banger_image::debian_unshare), whose preflight names what is missing.
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
    let what = format!("building image {name}");
    let built = blocking("image build", move || {
        banger_image::build_debian(&req, &mut |stage, detail| {
            sink.send(format!("image:{stage}"), detail)
        })
        .map_err(DaemonError::build(what))
    })
    .await;
    let built: BuiltImage = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The image's own kernel joins the kernel store under the image's name.
    let rec = publish(app, &id, name, &built, Some(name), &[], started)?;
    kernels::adopt_from_image(app, name, &app.layout.image_dir(&id), &built.kernel_release).await;
    Ok(rec)
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

/// How an OCI pull of `reference` is bounded: `BANGER_MAX_DOWNLOAD` caps each layer
/// and the whole pull (whatever the registry claims, and checked while streaming).
fn pull_options(reference: &str, max_download: u64) -> oci::PullOptions {
    let mut opts = oci::PullOptions {
        plain_http: plain_http_hosts(reference),
        ..Default::default()
    };
    let l = &mut opts.limits;
    l.max_compressed = l.max_compressed.min(max_download);
    l.max_total_compressed = l.max_total_compressed.min(max_download);
    opts
}

/// `image.pull`: a catalog name or an OCI reference. A second pull of a name that
/// exists from the same source returns the existing image; concurrent pulls of the
/// same name coalesce.
pub async fn pull(app: &App, p: ImagePullParams, progress: &ProgressSink) -> Result<ImageRecord> {
    if catalog::is_catalog_name(&p.reference) {
        return catalog::pull_image(app, p, progress).await;
    }
    let reference = p.reference;
    let name = p.name.unwrap_or_else(|| name_for_reference(&reference));
    check_name(&name)?;
    oci::parse_reference(&reference).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
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

/// OCI images carry no kernel, so the guest boots a kernel from the store (the
/// default image's unless `--kernel` names one). Any image boots: banger's agent is
/// the init and runs the commands; systemd and sshd are used when the image has them.
async fn pull_oci(
    app: &App,
    reference: &str,
    name: &str,
    kernel: Option<&str>,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    // Resolve the kernel first: the default one may itself need an image build.
    let kernel = kernel_for_new_image(app, kernel, progress).await?;
    let _cache = app.blob_cache.read().await;
    let started = Instant::now();
    let cache = oci::BlobCache::new(app.layout.blob_cache());
    let opts = pull_options(reference, app.config.max_download_bytes);
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
    .map_err(DaemonError::build(format!("pulling {reference}")))?;
    let blobs: Vec<String> = pulled
        .layers
        .iter()
        .map(|(_, d)| d.digest.clone())
        .collect();

    let id = banger_store::new_id();
    let staging = app.layout.image_staging().join(&id);
    let (agent, sink, st) = (app.config.agent.clone(), progress.clone(), staging.clone());
    let (source, kfiles) = (format!("oci:{reference}"), kernel.clone());
    let what = format!("turning {reference} into image {name}");
    let pulled_config = pulled.config.clone();
    let built = blocking("image pull", move || {
        let run = || -> Result<BuiltImage, Cause> {
            let tree_dir = st.join("tree");
            std::fs::create_dir_all(&tree_dir)
                .map_err(|e| format!("create {}: {e}", tree_dir.display()))?;
            let tree = oci::apply_pulled(
                &pulled,
                &tree_dir,
                oci::ApplyOptions::default(),
                &mut |i, _| sink.send("image:apply", Some(format!("layer {}", i + 1))),
            )?;
            let config = pulled_config_json(&pulled);
            finish_tree(tree, &st, &agent, &kfiles, &source, config, &sink)
        };
        run().map_err(DaemonError::build(what))
    })
    .await;
    match built {
        Ok(b) => {
            let mut rec = publish(app, &id, name, &b, kernel.name.as_deref(), &blobs, started)?;
            // What `docker run` would apply: recorded for the image's VMs (`vm::exec`).
            let c = &pulled_config;
            rec.run_config = banger_model::RunConfig {
                env: c.env.clone(),
                entrypoint: c.entrypoint.clone(),
                cmd: c.cmd.clone(),
                user: c.user.clone(),
                working_dir: c.working_dir.clone(),
            };
            app.db(|s| s.set_image_run_config(&rec.id, &rec.run_config))?;
            Ok(rec)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The parts of an OCI image's config a banger image keeps in its manifest.
fn pulled_config_json(p: &oci::PulledImage) -> serde_json::Value {
    serde_json::json!({
        "env": p.config.env,
        "cmd": p.config.cmd,
        "entrypoint": p.config.entrypoint,
        "working_dir": p.config.working_dir,
        "user": p.config.user,
    })
}

/// `image.delete`: refused while a VM uses it.
pub async fn delete(app: &App, name: &str) -> Result<()> {
    let img = app.db(|s| s.get_image_by_name(name))?;
    app.db(|s| s.delete_image(&img.id))?;
    // Its warm snapshots go with it (they fit no other image).
    {
        let _warm = app.warm_lock(&img.id).write_owned().await;
        crate::warm::remove_all(app, &img.id)?;
    }
    let dir = app.layout.image_dir(&img.id);
    std::fs::remove_dir_all(&dir).map_err(DaemonError::io("removing", &dir))
}

/// `image.show`.
pub fn show(app: &App, name: &str) -> Result<ImageInfo> {
    app.db(|s| s.get_image_by_name(name))
}

/// `image.list`.
pub fn list(app: &App) -> Result<Vec<ImageInfo>> {
    app.db(|s| s.list_images())
}

/// `image.cache_prune`: remove cached blobs no image was made from. Holds the cache
/// exclusively, so a pull in progress never loses a blob it just fetched.
pub async fn cache_prune(app: &App, dry_run: bool) -> Result<CachePruneResult> {
    let _cache = app.blob_cache.write().await;
    let keep: std::collections::HashSet<String> =
        app.db(|s| s.referenced_blobs())?.into_iter().collect();
    let cache = oci::BlobCache::new(app.layout.blob_cache());
    let report = cache
        .prune(&keep, dry_run)
        .map_err(DaemonError::build("pruning the blob cache"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_and_plain_http() {
        assert_eq!(
            name_for_reference("docker.io/library/debian:bookworm"),
            "debian-bookworm"
        );
        assert_eq!(
            name_for_reference("localhost:5000/team/devbox"),
            "devbox-latest"
        );
        assert_eq!(name_for_reference("r.io/x/y@sha256:abc"), "y-latest");
        assert_eq!(plain_http_hosts("localhost:5000/x:y"), ["localhost:5000"]);
        assert!(plain_http_hosts("registry.example.com/x:y").is_empty());
        assert!(plain_http_hosts("localhost").is_empty());
    }

    #[test]
    fn banger_max_download_caps_each_layer_and_the_whole_pull() {
        let o = pull_options("localhost:5000/x:y", 3 << 20);
        assert_eq!(o.limits.max_compressed, 3 << 20);
        assert_eq!(
            o.limits.max_total_compressed,
            3 << 20,
            "many layers under the per-layer cap must not add up past BANGER_MAX_DOWNLOAD"
        );
        // A larger setting never raises the built-in caps.
        let d = oci::PullOptions::default();
        let o = pull_options("r.io/x:y", u64::MAX);
        assert_eq!(o.limits.max_total_compressed, d.limits.max_total_compressed);
        assert_eq!(o.limits.max_compressed, d.limits.max_compressed);
    }
}
