//! Pull from a real registry on loopback (Debian's `docker-registry`, filesystem
//! storage in a temp dir): push a multi-layer image with whiteouts, a hardlink and a
//! setuid file with oci-client, pull it with banger's code through the blob cache,
//! apply it and check the tree and the ext4 image. Skips with a reason when the
//! registry is not installed or does not start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::oci::{
    apply_pulled, build_rootfs, client, fetch, ApplyOptions, BlobCache, PullError, PullEvent,
    PullOptions,
};
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use oci_support::*;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

fn config_json(arch: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/root"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Push a gzip-layered image; returns (manifest digest, manifest size).
async fn push(
    c: &oci_client::Client,
    r: &Reference,
    arch: &str,
    tars: &[Vec<u8>],
) -> (String, usize) {
    let layers: Vec<ImageLayer> = tars
        .iter()
        .map(|t| ImageLayer::new(gzip(t), GZIP.into(), None))
        .collect();
    let config = Config::new(
        config_json(arch, tars),
        IMAGE_CONFIG_MEDIA_TYPE.into(),
        None,
    );
    c.push(r, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .unwrap();
    let (raw, digest) = c
        .pull_manifest_raw(r, &RegistryAuth::Anonymous, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .unwrap();
    (digest, raw.len())
}

fn image_tars() -> Vec<Vec<u8>> {
    vec![
        Layer::new()
            .dir("./", ROOT)
            .dir("etc", ROOT)
            .file("etc/os-release", ROOT, b"ID=banger-test\n")
            .file("etc/motd", ROOT, b"to be whited out\n")
            .dir("var/cache/apt", ROOT)
            .file("var/cache/apt/pkgcache.bin", ROOT, b"cache")
            .dir("usr/bin", ROOT)
            .file("usr/bin/su", m(0o4755, 0, 0), b"#!setuid")
            .dir("home/dev", m(0o755, 1000, 1000))
            .file("home/dev/notes", m(0o644, 1000, 1000), b"hi")
            .finish(),
        Layer::new()
            .whiteout("etc/.wh.motd")
            .dir("var/cache/apt", ROOT)
            .whiteout("var/cache/apt/.wh..wh..opq")
            .hardlink("usr/bin/su2", "usr/bin/su")
            .file("etc/arch", ROOT, b"amd64")
            .finish(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_push_roundtrip_through_a_real_registry() {
    let reg = match start_registry() {
        Ok(r) => r,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let opts = PullOptions {
        plain_http: vec![reg.host.clone()],
        ..Default::default()
    };
    let c = client(&opts);
    // amd64 and arm64 variants behind one index: the pull must pick amd64.
    let amd: Reference = format!("{}/banger/test:amd64", reg.host).parse().unwrap();
    let arm: Reference = format!("{}/banger/test:arm64", reg.host).parse().unwrap();
    let (amd_digest, amd_size) = push(&c, &amd, "amd64", &image_tars()).await;
    let arm_tars = vec![Layer::new().file("etc/arch", ROOT, b"arm64").finish()];
    let (arm_digest, arm_size) = push(&c, &arm, "arm64", &arm_tars).await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": arm_digest, "size": arm_size,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": amd_digest, "size": amd_size,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    });
    let multi: Reference = format!("{}/banger/test:v1", reg.host).parse().unwrap();
    c.push_manifest_raw(
        &multi,
        serde_json::to_vec(&index).unwrap(),
        OCI_IMAGE_INDEX_MEDIA_TYPE.parse().unwrap(),
    )
    .await
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(work.path().join("blobs"));
    let mut events = vec![];
    let t0 = Instant::now();
    let pulled = fetch(&multi.whole(), &cache, &opts, &mut |e| events.push(e))
        .await
        .unwrap();
    let t_fetch = t0.elapsed();
    assert_eq!(pulled.manifest_digest, amd_digest);
    assert_eq!(pulled.config.architecture, "amd64");
    assert_eq!(pulled.config.cmd, ["/bin/sh"]);
    assert_eq!(pulled.config.working_dir.as_deref(), Some("/root"));
    assert_eq!(pulled.layers.len(), 2);
    assert!(
        matches!(events[0], PullEvent::Resolved { layers: 2, .. }),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerFetched { .. }))
            .count(),
        2
    );

    let staging = work.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let mut applied = 0;
    let t1 = Instant::now();
    let tree = tokio::task::spawn_blocking({
        let pulled = pulled.clone();
        let staging = staging.clone();
        move || {
            apply_pulled(&pulled, &staging, ApplyOptions::default(), &mut |_, _| {
                applied += 1
            })
            .map(|t| (t, applied))
        }
    })
    .await
    .unwrap()
    .unwrap();
    let (tree, applied) = tree;
    let t_apply = t1.elapsed();
    assert_eq!(applied, 2);
    assert_eq!(std::fs::read(staging.join("etc/arch")).unwrap(), b"amd64");
    assert!(!staging.join("etc/motd").exists());
    assert_eq!(
        std::fs::read_dir(staging.join("var/cache/apt"))
            .unwrap()
            .count(),
        0
    );
    let su = std::fs::symlink_metadata(staging.join("usr/bin/su")).unwrap();
    assert_eq!(
        su.ino(),
        std::fs::symlink_metadata(staging.join("usr/bin/su2"))
            .unwrap()
            .ino()
    );
    assert_eq!(su.mode() & 0o7777, 0o4755);
    if is_root() {
        assert_eq!(
            std::fs::symlink_metadata(staging.join("home/dev/notes"))
                .unwrap()
                .uid(),
            1000
        );
    }
    if have_e2fsprogs() {
        let img = work.path().join("rootfs.ext4");
        build_rootfs(&tree, &img, "banger-root").unwrap();
        let su = debugfs_stat(&img, "/usr/bin/su").unwrap();
        assert_eq!((su.mode, su.uid, su.links), (0o4755, 0, 2));
        let notes = debugfs_stat(&img, "/home/dev/notes").unwrap();
        assert_eq!((notes.uid, notes.gid), (1000, 1000));
        assert!(debugfs_stat(&img, "/etc/motd").is_none());
    }
    eprintln!(
        "fetch {:.3}s, apply {:.3}s",
        t_fetch.as_secs_f64(),
        t_apply.as_secs_f64()
    );

    // A second pull is served from the cache.
    let mut again = vec![];
    fetch(&multi.whole(), &cache, &opts, &mut |e| again.push(e))
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerCached { .. }))
            .count(),
        2
    );

    // Pruning keeps what is referenced.
    let keep: HashSet<String> = pulled
        .layers
        .iter()
        .map(|(_, d)| d.digest.clone())
        .collect();
    let dry = cache.prune(&keep, true).unwrap();
    assert_eq!(dry.blobs, 1, "only the config blob is unreferenced");
    assert_eq!(cache.prune(&keep, false).unwrap(), dry);
    assert_eq!(cache.prune(&keep, true).unwrap().blobs, 0);

    // An arm64-only reference is refused.
    let e = fetch(
        &arm.whole(),
        &BlobCache::new(work.path().join("b2")),
        &opts,
        &mut |_| {},
    )
    .await;
    assert!(matches!(e, Err(PullError::Platform { .. })), "{e:?}");

    // A blob damaged in the registry's storage is refused and never enters the cache.
    let (_, layer0) = &pulled.layers[0];
    let hex = layer0.digest.trim_start_matches("sha256:");
    let stored = reg
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let fresh = BlobCache::new(work.path().join("b3"));
    let e = fetch(&multi.whole(), &fresh, &opts, &mut |_| {}).await;
    assert!(
        matches!(
            e,
            Err(PullError::BlobDigest { .. }) | Err(PullError::Download { .. })
        ),
        "{e:?}"
    );
    assert!(!fresh.has(&layer0.digest, layer0.size));

    // A layer over the compressed cap is refused before download.
    let small = PullOptions {
        limits: banger_image::oci::Limits {
            max_compressed: 16,
            ..Default::default()
        },
        ..opts.clone()
    };
    let e = fetch(
        &multi.whole(),
        &BlobCache::new(work.path().join("b4")),
        &small,
        &mut |_| {},
    )
    .await;
    assert!(matches!(e, Err(PullError::BlobTooLarge { .. })), "{e:?}");
}
