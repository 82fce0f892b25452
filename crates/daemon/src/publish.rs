//! What every way of making an image or kernel shares: name rules, the staging →
//! publish step, the common finish of an image tree, unpacking a tarball through
//! the no-follow applier, and the kernel files a new image links.
//!
//! Images and kernels are prepared in `images/.staging/<id>` or
//! `kernels/.staging/<id>` and published by one durable rename plus one row
//! ([`publish_dir`]: every file fsynced, the rename, the directories fsynced, and
//! only then the row). A failure, or a daemon killed half-way, leaves staging
//! debris ([`sweep_staging`]) or a published directory no row names yet
//! ([`sweep_orphans`]); both are removed on the next start, and nothing a row names
//! ever is. This module depends on nothing else in the daemon's
//! services, so `images`, `catalog`, `kernels` and `flatten` can all use it without
//! depending on each other in a circle.

use crate::app::App;
use crate::error::{Cause, DaemonError, Result};
use banger_image::oci;
use banger_image::BuiltImage;
use banger_model::ImageRecord;
use banger_rpc::ProgressSink;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Image and kernel names: what fits a file name and a table cell.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(DaemonError::BadRequest(format!(
            "image name {name:?} may only contain letters, digits, '-', '.' and '_'"
        )));
    }
    Ok(())
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Remove leftovers of interrupted image builds and kernel imports.
pub fn sweep_staging(app: &App) {
    for staging in [app.layout.image_staging(), app.layout.kernel_staging()] {
        if staging.exists() {
            tracing::info!(path = %staging.display(), "removing leftovers of interrupted image builds or kernel imports");
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(path = %staging.display(), "{e}");
            }
        }
    }
}

/// Remove published image and kernel directories that no row names: what a crash
/// between a publish's rename and its row insert leaves (or one between a delete's
/// row removal and its directory removal). Runs at start, under the state lock and
/// before any request, so no publish is in flight. Only directories named like a
/// store id are considered, and if the rows cannot be read nothing is removed: a
/// directory a row names is never touched.
pub fn sweep_orphans(app: &App) {
    let images: Result<HashSet<String>> = app
        .db(|s| s.list_images())
        .map(|v| v.into_iter().map(|r| r.id).collect());
    let kernels: Result<HashSet<String>> = app
        .db(|s| s.list_kernels())
        .map(|v| v.into_iter().map(|r| r.id).collect());
    let parent = |p: PathBuf| p.parent().map(Path::to_path_buf);
    for (dir, named) in [
        (parent(app.layout.image_staging()), images),
        (parent(app.layout.kernel_staging()), kernels),
    ] {
        let (Some(dir), Ok(named)) = (dir, named) else {
            tracing::warn!(
                "not sweeping unrecorded images or kernels: their rows could not be read"
            );
            continue;
        };
        remove_unnamed(&dir, &named);
    }
}

/// Remove the entries of `dir` that look like store ids, are real directories (not
/// symlinks) and are not in `named`.
fn remove_unnamed(dir: &Path, named: &HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_id = name.len() == 12
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_id || named.contains(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        tracing::warn!(path = %e.path().display(), "removing a published directory no row names (a daemon died between publishing it and recording it)");
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            tracing::warn!(path = %e.path().display(), "{err}");
        }
    }
}

/// Remove blob downloads that never reached their final name (a daemon killed
/// between writing a blob and renaming it into the cache). At start, before any
/// pull can be staging one.
pub fn sweep_blob_temps(app: &App) {
    match oci::BlobCache::new(app.layout.blob_cache()).sweep_temps() {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed unfinished blob downloads"),
        Err(e) => tracing::warn!("sweeping unfinished blob downloads: {e}"),
    }
}

/// Make a finished staging directory durable and move it to `dest`: every file and
/// directory in it fsynced (children first), the rename, both parent directories
/// fsynced. Only after this may a row name `dest`: a crash then leaves the tree
/// whole under its new name, or still in staging.
pub(crate) fn publish_dir(staging: &Path, dest: &Path) -> std::io::Result<()> {
    use banger_image::durable;
    if let Err(e) = durable::sync_tree(staging) {
        // An entry we may not open (a mode-0000 file of the image): flush the whole
        // filesystem instead, which covers it too.
        tracing::debug!(path = %staging.display(), "fsync of each file failed ({e}); syncing the filesystem");
        durable::sync_filesystem(staging)?;
    }
    durable::rename_durably(staging, dest)
}

/// Hard-link `from` to `to`, copying when they are on different filesystems.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// The image `name` if it exists and came from `source`; an error if it exists
/// but came from elsewhere.
pub(crate) fn existing_from(app: &App, name: &str, source: &str) -> Result<Option<ImageRecord>> {
    match app.db(|s| s.get_image_by_name(name)) {
        Ok(img) if img.source == source => Ok(Some(img)),
        Ok(img) => Err(DaemonError::AlreadyExists(format!(
            "an image named {name} already exists (from {}); delete it first or pick another name with --name",
            img.source
        ))),
        Err(_) => Ok(None),
    }
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
) -> Result<ImageRecord> {
    let dir = app.layout.image_dir(id);
    let run = || -> Result<ImageRecord> {
        publish_dir(&built.dir, &dir).map_err(DaemonError::io("publishing the image to", &dir))?;
        let rec = ImageRecord {
            id: id.to_string(),
            name: name.to_string(),
            source: built.source.clone(),
            kernel_release: built.kernel_release.clone(),
            size_bytes: built.size_bytes,
            created_at: now(),
            kernel: kernel.map(str::to_string),
            run_config: Default::default(),
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

/// The kernel files a new image gets.
#[derive(Debug, Clone)]
pub(crate) struct KernelFiles {
    /// Directory holding the kernel and initrd (`vmlinuz`, `initrd.img`).
    pub dir: PathBuf,
    /// Kernel store name, when it came from the store.
    pub name: Option<String>,
    /// Kernel release.
    pub release: String,
}

/// Turn an applied tree in `staging/tree` into a publishable image directory:
/// banger's customisation, /root moved out as the work seed, ext4 without mounting,
/// the kernel and initrd linked in, and a manifest. Shared by every pull path,
/// register and promote, so they all produce the same kind of image. Blocking.
pub(crate) fn finish_tree(
    mut tree: oci::AppliedTree,
    staging: &Path,
    agent: &Path,
    kernel: &KernelFiles,
    source: &str,
    config: serde_json::Value,
    sink: &ProgressSink,
) -> Result<BuiltImage, Cause> {
    use banger_image::files;
    sink.send("image:customize", None);
    banger_image::customize::apply(&tree.root, agent)?;
    let seed = staging.join(files::WORK_SEED);
    let mut ed = oci::TreeEditor::open(&tree.root)?;
    // symlink_metadata does not follow `root` itself, and its parent is ours.
    let mut seed_owners = if std::fs::symlink_metadata(tree.root.join("root"))
        .is_ok_and(|m| m.is_dir())
    {
        std::fs::rename(tree.root.join("root"), &seed).map_err(|e| format!("move /root: {e}"))?;
        tree.fixups.split_off("root")
    } else {
        let _ = ed.remove("root");
        std::fs::create_dir_all(&seed).map_err(|e| format!("create {}: {e}", seed.display()))?;
        Default::default()
    };
    sanitize_seed(&seed, Some(&mut seed_owners), sink)?;
    ed.create_dir_all("root", 0o700)?;
    sink.send("image:ext4", None);
    let rootfs = staging.join(files::ROOTFS);
    let info = oci::build_rootfs(&tree, &rootfs, banger_image::LABEL_ROOT)?;
    std::fs::remove_dir_all(&tree.root).map_err(|e| format!("remove the unpacked tree: {e}"))?;
    for f in [files::KERNEL, files::INITRD] {
        let (from, to) = (kernel.dir.join(f), staging.join(f));
        link_or_copy(&from, &to).map_err(|e| format!("copy the kernel {}: {e}", from.display()))?;
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
    let path = staging.join(files::MANIFEST);
    std::fs::write(&path, manifest.to_string())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(built)
}

/// Make the work seed at `seed` safe to keep on the host (no setuid/setgid bits,
/// device nodes, sockets, fifos or `security.*`/`trusted.*` xattrs; the seed 0700),
/// in the tree and in `owners` (an unprivileged apply's record), and warn about what
/// was dropped, as progress of `image:work-seed` and in the log. Blocking.
pub(crate) fn sanitize_seed(
    seed: &Path,
    owners: Option<&mut oci::Fixups>,
    sink: &ProgressSink,
) -> Result<(), Cause> {
    let dropped = banger_image::seed::sanitize_work_seed(seed, owners)?;
    if let Some(w) = banger_image::seed::warning(&dropped) {
        tracing::warn!("{w}");
        sink.send("image:work-seed", Some(w));
    }
    Ok(())
}

/// Create a staging directory (and its missing parents) private to the owner,
/// whatever the umask: it becomes an image or kernel directory by a rename.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Unpack a tar stream from `file` into `dest` through the no-follow applier, which
/// refuses hostile entries (`..`, absolute paths, symlinked ancestors, escaping
/// hardlinks) and decompresses by magic. `label` names the input in errors.
pub(crate) fn unpack_tar(file: &Path, label: &str, dest: &Path) -> Result<oci::AppliedTree, Cause> {
    let f = std::fs::File::open(file).map_err(|e| format!("open {label}: {e}"))?;
    std::fs::create_dir_all(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    let mut a = oci::Applier::new(dest, oci::ApplyOptions::default())?;
    a.apply_stream(label, f, oci::Whiteouts::Interpret)?;
    Ok(a.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("debian-bookworm").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        for bad in ["", "a/b", "..x/", "has space", &"x".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(DaemonError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
