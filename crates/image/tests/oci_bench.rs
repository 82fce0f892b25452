//! Apply + flatten speed on a real ~100 MB tree (ignored by default; run with
//! `cargo test --release -p banger-image --test oci_bench -- --ignored --nocapture`).
//! The layer is GNU tar's pax output of host directories (default: Debian's Python
//! 3.11 standard library and dist-packages, ~100 MB in ~4800 files), gzip-compressed.
//! Also times the baseline `tar -xzf` + `mkfs.ext4 -d` on the same layer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::oci::{
    apply_pulled, build_rootfs, client, fetch, Applier, ApplyOptions, BlobCache, OwnerMode,
    PullOptions,
};
use oci_support::*;
use std::process::Command;
use std::time::Instant;

#[test]
#[ignore]
fn apply_and_flatten_100mb() {
    let dirs = std::env::var("BANGER_OCI_BENCH_DIRS")
        .unwrap_or_else(|_| "/usr/lib/python3.11 /usr/lib/python3".into());
    let dirs: Vec<&str> = dirs
        .split_whitespace()
        .filter(|d| std::path::Path::new(d).is_dir())
        .collect();
    if dirs.is_empty() || !have_e2fsprogs() {
        eprintln!("skipping: no source directories or no e2fsprogs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer.tar.gz");
    // Names debugfs cannot encode are refused by design: leave them out of the sample.
    let st = Command::new("tar")
        .args(["--format=posix", "--exclude=* *", "-czf"])
        .arg(&layer)
        .args(dirs.iter().map(|d| d.trim_start_matches('/')))
        .current_dir("/")
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&layer).unwrap();
    let (p, d) = blob(t.path(), &bytes, GZIP);
    for owners in [OwnerMode::Auto, OwnerMode::Record] {
        let dir = t.path().join(format!("{owners:?}"));
        std::fs::create_dir_all(dir.join("staging")).unwrap();
        let t0 = Instant::now();
        let mut a = Applier::new(
            &dir.join("staging"),
            ApplyOptions {
                owners,
                ..Default::default()
            },
        )
        .unwrap();
        let stats = a.apply_layer(&p, &d).unwrap();
        let tree = a.finish().unwrap();
        let t_apply = t0.elapsed();
        let t1 = Instant::now();
        let info = build_rootfs(&tree, &dir.join("rootfs.ext4"), "banger-root").unwrap();
        let t_ext4 = t1.elapsed();
        eprintln!(
            "{owners:?}: {} MB gz, {} MB tar, {} entries: verify+apply {:.2}s ({:.0} MB/s unpacked), ext4 {:.2}s ({} debugfs commands), total {:.2}s",
            stats.compressed_bytes >> 20,
            stats.uncompressed_bytes >> 20,
            stats.entries,
            t_apply.as_secs_f64(),
            (stats.uncompressed_bytes >> 20) as f64 / t_apply.as_secs_f64(),
            t_ext4.as_secs_f64(),
            info.debugfs_commands,
            (t_apply + t_ext4).as_secs_f64()
        );
    }
    let base = t.path().join("baseline");
    std::fs::create_dir_all(&base).unwrap();
    let t0 = Instant::now();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&base)
        .status()
        .unwrap()
        .success());
    let t_tar = t0.elapsed();
    let img = t.path().join("baseline.ext4");
    let size = std::fs::metadata(t.path().join("Auto/rootfs.ext4"))
        .unwrap()
        .len();
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let t1 = Instant::now();
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&base)
        .arg(&img)
        .status()
        .unwrap()
        .success());
    eprintln!(
        "baseline: tar -xzf {:.2}s, mkfs.ext4 -d {:.2}s, total {:.2}s",
        t_tar.as_secs_f64(),
        t1.elapsed().as_secs_f64(),
        (t_tar + t1.elapsed()).as_secs_f64()
    );
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The comparison: pull + flatten of the same ~100 MB image from a local
/// registry, banger versus `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn registry_pull_vs_skopeo_umoci() {
    let reg = match start_registry() {
        Ok(r) => r,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let t = tempfile::tempdir().unwrap();
    let tarball = t.path().join("layer.tar");
    let st = Command::new("tar")
        .args(["--format=posix", "--exclude=* *", "-cf"])
        .arg(&tarball)
        .args(["usr/lib/python3.11", "usr/lib/python3"])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(st.success());
    let tar_bytes = std::fs::read(&tarball).unwrap();
    let opts = PullOptions {
        plain_http: vec![reg.host.clone()],
        ..Default::default()
    };
    let c = client(&opts);
    let r: oci_client::Reference = format!("{}/bench/py:1", reg.host).parse().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar_bytes)]},
    }))
    .unwrap();
    c.push(
        &r,
        &[oci_client::client::ImageLayer::new(
            gzip(&tar_bytes),
            GZIP.into(),
            None,
        )],
        oci_client::client::Config::new(
            config,
            oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.into(),
            None,
        ),
        &oci_client::secrets::RegistryAuth::Anonymous,
        None,
    )
    .await
    .unwrap();

    // banger
    let cache = BlobCache::new(t.path().join("blobs"));
    let t0 = Instant::now();
    let pulled = fetch(&r.whole(), &cache, &opts, &mut |_| {}).await.unwrap();
    let t_fetch = t0.elapsed();
    let staging = t.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let t1 = Instant::now();
    let (tree, t_ext4) = tokio::task::spawn_blocking({
        let staging = staging.clone();
        let img = t.path().join("rootfs.ext4");
        move || {
            let tree =
                apply_pulled(&pulled, &staging, ApplyOptions::default(), &mut |_, _| {}).unwrap();
            let t2 = Instant::now();
            build_rootfs(&tree, &img, "banger-root").unwrap();
            (tree, t2.elapsed())
        }
    })
    .await
    .unwrap();
    let t_apply = t1.elapsed() - t_ext4;
    drop(tree);
    eprintln!(
        "banger: fetch {} + apply {} + ext4 {} = {}",
        secs(t_fetch),
        secs(t_apply),
        secs(t_ext4),
        secs(t_fetch + t_apply + t_ext4)
    );

    // skopeo + umoci + mkfs.ext4 -d
    let have = |b: &str| Command::new(b).arg("--version").output().is_ok();
    if !have("skopeo") || !have("umoci") {
        eprintln!("skipping the comparison: skopeo or umoci not installed");
        return;
    }
    let layout = t.path().join("layout");
    let t0 = Instant::now();
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--quiet"])
        .arg(format!("docker://{}/bench/py:1", reg.host))
        .arg(format!("oci:{}:py", layout.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let t_copy = t0.elapsed();
    let bundle = t.path().join("bundle");
    let t1 = Instant::now();
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:py", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(st.success());
    let t_unpack = t1.elapsed();
    let img = t.path().join("umoci.ext4");
    let size = std::fs::metadata(t.path().join("rootfs.ext4"))
        .unwrap()
        .len();
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let t2 = Instant::now();
    let st = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-d",
        ])
        .arg(bundle.join("rootfs"))
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let t_mkfs = t2.elapsed();
    eprintln!(
        "skopeo copy {} + umoci unpack {} + mkfs.ext4 -d {} = {}",
        secs(t_copy),
        secs(t_unpack),
        secs(t_mkfs),
        secs(t_copy + t_unpack + t_mkfs)
    );
}
