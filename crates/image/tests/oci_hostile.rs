//! Hostile layers, case by case: each is refused with its own error and the host tree
//! outside the staging directory is left exactly as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod oci_support;

use banger_image::oci::{Applier, ApplyError, ApplyOptions, LayerDescriptor, Limits, OwnerMode};
use oci_support::*;
use std::path::PathBuf;
use tar::EntryType;

/// Apply `layers` (plain tar) into a fresh site; return the result and check that
/// nothing outside staging changed and `escape/` is still empty.
fn run(layers: Vec<Vec<u8>>, opts: ApplyOptions) -> (Result<(), ApplyError>, Site) {
    let site = Site::new();
    let blobs: Vec<(PathBuf, LayerDescriptor)> =
        layers.iter().map(|l| blob(&site.blobs(), l, TAR)).collect();
    let r = run_blobs(&site, &blobs, opts);
    (r, site)
}

fn run_blobs(
    site: &Site,
    blobs: &[(PathBuf, LayerDescriptor)],
    opts: ApplyOptions,
) -> Result<(), ApplyError> {
    let before = site.snapshot();
    let r = (|| {
        let mut a = Applier::new(&site.staging(), opts)?;
        for (p, d) in blobs {
            a.apply_layer(p, d)?;
        }
        a.finish().map(|_| ())
    })();
    assert_eq!(
        before,
        site.snapshot(),
        "the host tree outside staging changed"
    );
    assert_eq!(
        std::fs::read_dir(site.escape()).unwrap().count(),
        0,
        "something escaped"
    );
    r
}

fn one(layer: &mut Layer) -> Result<(), ApplyError> {
    run(vec![layer.finish()], ApplyOptions::default()).0
}

/// Both owner modes must refuse the same way.
fn both(layers: impl Fn(&Site) -> Vec<Vec<u8>>, check: impl Fn(&ApplyError) -> bool) {
    for owners in [OwnerMode::Auto, OwnerMode::Record] {
        let site = Site::new();
        let blobs: Vec<_> = layers(&site)
            .iter()
            .map(|l| blob(&site.blobs(), l, TAR))
            .collect();
        let r = run_blobs(
            &site,
            &blobs,
            ApplyOptions {
                owners,
                ..Default::default()
            },
        );
        match r {
            Err(e) if check(&e) => {}
            other => panic!("{owners:?}: unexpected {other:?}"),
        }
    }
}

#[test]
fn dotdot_entry() {
    let r = one(Layer::new().file("../x", ROOT, b"pwned"));
    assert!(matches!(r, Err(ApplyError::DotDot { .. })), "{r:?}");
}

#[test]
fn absolute_entry() {
    let r = one(Layer::new().file("/etc/x", ROOT, b"pwned"));
    assert!(matches!(r, Err(ApplyError::Absolute { .. })), "{r:?}");
    assert!(!std::path::Path::new("/etc/x").exists());
}

#[test]
fn dotdot_in_the_middle() {
    let r = one(Layer::new()
        .dir("a", ROOT)
        .file("a/../../x", ROOT, b"pwned"));
    assert!(matches!(r, Err(ApplyError::DotDot { .. })), "{r:?}");
}

#[test]
fn write_through_absolute_symlink() {
    both(
        |s| {
            let esc = s.escape().display().to_string();
            vec![Layer::new()
                .symlink("a", &esc)
                .file("a/pwned", ROOT, b"pwned")
                .finish()]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { ancestor, .. } if ancestor == "a"),
    );
}

#[test]
fn write_through_symlink_set_by_an_earlier_layer() {
    both(
        |s| {
            let esc = s.escape().display().to_string();
            vec![
                Layer::new().dir("etc", ROOT).finish(),
                // Replaces the directory with a symlink (legal), then a third layer
                // tries to write under it.
                Layer::new().symlink("etc", &esc).finish(),
                Layer::new().file("etc/passwd", ROOT, b"pwned").finish(),
            ]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { .. }),
    );
}

#[test]
fn write_through_relative_parent_symlink() {
    both(
        |_| {
            vec![Layer::new()
                .symlink("a", "..")
                .file("a/x", ROOT, b"pwned")
                .finish()]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { .. }),
    );
    both(
        |_| {
            vec![Layer::new()
                .dir("d", ROOT)
                .symlink("d/up", "../..")
                .dir("d/up/x", ROOT)
                .finish()]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { ancestor, .. } if ancestor == "d/up"),
    );
}

#[test]
fn hardlink_outside() {
    both(
        |_| {
            vec![Layer::new()
                .hardlink("x", "../outside/sentinel.txt")
                .finish()]
        },
        |e| matches!(e, ApplyError::HardlinkOutside { .. }),
    );
    both(
        |s| {
            let abs = s.outside().join("sentinel.txt").display().to_string();
            vec![Layer::new().hardlink("x", &abs).finish()]
        },
        |e| matches!(e, ApplyError::HardlinkOutside { .. }),
    );
}

#[test]
fn hardlink_through_symlinked_dir() {
    both(
        |s| {
            let out = s.outside().display().to_string();
            vec![Layer::new()
                .symlink("d", &out)
                .hardlink("x", "d/sentinel.txt")
                .finish()]
        },
        |e| matches!(e, ApplyError::HardlinkThroughSymlink { ancestor, .. } if ancestor == "d"),
    );
}

#[test]
fn hardlink_to_nothing_or_a_directory() {
    both(
        |_| vec![Layer::new().hardlink("x", "missing").finish()],
        |e| matches!(e, ApplyError::HardlinkTarget { .. }),
    );
    both(
        |_| vec![Layer::new().dir("d", ROOT).hardlink("x", "d").finish()],
        |e| matches!(e, ApplyError::HardlinkTarget { .. }),
    );
}

#[test]
fn whiteout_outside() {
    both(
        |_| vec![Layer::new().whiteout("../.wh.outside").finish()],
        |e| matches!(e, ApplyError::DotDot { .. }),
    );
    both(
        |_| vec![Layer::new().whiteout(".wh...").finish()],
        |e| matches!(e, ApplyError::DotDot { .. }),
    );
    both(
        |_| vec![Layer::new().whiteout("a/.wh.").finish()],
        |e| matches!(e, ApplyError::BadWhiteout { .. }),
    );
}

#[test]
fn whiteout_through_symlink() {
    both(
        |s| {
            let out = s.outside().display().to_string();
            vec![
                Layer::new().symlink("o", &out).finish(),
                Layer::new().whiteout("o/.wh.sentinel.txt").finish(),
            ]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { .. }),
    );
    both(
        |s| {
            let out = s.outside().display().to_string();
            vec![
                Layer::new().symlink("o", &out).finish(),
                Layer::new().whiteout("o/.wh..wh..opq").finish(),
            ]
        },
        |e| matches!(e, ApplyError::SymlinkAncestor { .. }),
    );
}

/// Recorded owners are applied by a debugfs script, read line by line: no name may
/// hold a control character (spaces, quotes and backslashes travel quoted).
fn recorded() -> ApplyOptions {
    ApplyOptions {
        owners: OwnerMode::Record,
        ..Default::default()
    }
}

#[test]
fn unencodable_names() {
    for name in [
        &b"a\nb"[..],
        b"a\rb",
        b"\xff\xfe",
        b"tab\there",
        b"bell\x07",
    ] {
        let layer = Layer::new()
            .raw(EntryType::Regular, name, None, ROOT, b"x")
            .finish();
        let r = run(vec![layer], recorded()).0;
        assert!(
            matches!(r, Err(ApplyError::Unencodable { .. })),
            "{name:?}: {r:?}"
        );
    }
    // In a directory name, and as a hardlink target.
    let r = run(
        vec![Layer::new().dir("bad\ndir", ROOT).finish()],
        recorded(),
    )
    .0;
    assert!(matches!(r, Err(ApplyError::Unencodable { .. })), "{r:?}");
    let r = run(
        vec![Layer::new().hardlink("x", "a\nb").finish()],
        recorded(),
    )
    .0;
    assert!(matches!(r, Err(ApplyError::Unencodable { .. })), "{r:?}");
    // What real images use is accepted without root too.
    for name in [
        &b"system-systemd\\x2dcryptsetup.slice"[..],
        b"launcher manifest.xml",
        b"it's \"quoted\"",
    ] {
        let layer = Layer::new()
            .raw(EntryType::Regular, name, None, ROOT, b"x")
            .finish();
        let r = run(vec![layer], recorded()).0;
        assert!(r.is_ok(), "{name:?}: {r:?}");
    }
}

/// With native owners (root) no debugfs script is involved: names real images use,
/// with spaces, quotes and backslashes, are applied; control characters and
/// non-UTF-8 are still refused.
#[test]
fn native_owners_accept_real_world_names() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: native owners need root");
        return;
    }
    let native = || ApplyOptions {
        owners: OwnerMode::Native,
        ..Default::default()
    };
    for name in [
        &b"system-systemd\\x2dcryptsetup.slice"[..],
        b"launcher manifest.xml",
        b"it's",
    ] {
        let layer = Layer::new()
            .raw(EntryType::Regular, name, None, ROOT, b"x")
            .finish();
        let r = run(vec![layer], native()).0;
        assert!(r.is_ok(), "{name:?}: {r:?}");
    }
    for name in [&b"a\nb"[..], b"bell\x07", b"\xff\xfe"] {
        let layer = Layer::new()
            .raw(EntryType::Regular, name, None, ROOT, b"x")
            .finish();
        let r = run(vec![layer], native()).0;
        assert!(
            matches!(r, Err(ApplyError::Unencodable { .. })),
            "{name:?}: {r:?}"
        );
    }
}

#[test]
fn replacing_symlinks_never_writes_through_them() {
    // A file, a directory and a device entry each replace a symlink pointing outside;
    // the outside stays untouched (checked by `run`) and the symlinks are gone.
    let site = Site::new();
    let out = site.outside();
    let sentinel = out.join("sentinel.txt").display().to_string();
    let layers = [
        Layer::new()
            .symlink("f", &sentinel)
            .symlink("d", &out.display().to_string())
            .symlink("p", &sentinel)
            .finish(),
        Layer::new()
            .file("f", m(0o777, 0, 0), b"pwned")
            .dir("d", m(0o777, 0, 0))
            .device("p", EntryType::Fifo, 0, 0, m(0o777, 0, 0))
            .finish(),
    ];
    let blobs: Vec<_> = layers.iter().map(|l| blob(&site.blobs(), l, TAR)).collect();
    let r = run_blobs(&site, &blobs, ApplyOptions::default());
    r.unwrap();
    let st = site.staging();
    assert_eq!(std::fs::read(st.join("f")).unwrap(), b"pwned");
    assert!(std::fs::symlink_metadata(st.join("d")).unwrap().is_dir());
    assert!(!std::fs::symlink_metadata(st.join("p"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn oversize_compressed() {
    let site = Site::new();
    let layer = Layer::new()
        .file("big", ROOT, &vec![7u8; 64 * 1024])
        .finish();
    let blobs = vec![blob(&site.blobs(), &layer, TAR)];
    let limits = Limits {
        max_compressed: 16 * 1024,
        ..Limits::default()
    };
    let r = run_blobs(
        &site,
        &blobs,
        ApplyOptions {
            limits,
            ..Default::default()
        },
    );
    assert!(
        matches!(r, Err(ApplyError::CompressedTooLarge { .. })),
        "{r:?}"
    );
    assert_eq!(std::fs::read_dir(site.staging()).unwrap().count(), 0);
}

#[test]
fn oversize_uncompressed_bomb() {
    // 32 MiB of zeros gzip to ~32 KiB: under the compressed cap, over the unpacked one.
    for (compress, mt) in [(gzip as fn(&[u8]) -> Vec<u8>, GZIP), (zstd, ZSTD)] {
        let site = Site::new();
        let layer = compress(
            &Layer::new()
                .file("bomb", ROOT, &vec![0u8; 32 << 20])
                .finish(),
        );
        assert!(layer.len() < 1 << 20);
        let blobs = vec![blob(&site.blobs(), &layer, mt)];
        let limits = Limits {
            max_uncompressed: 4 << 20,
            ..Limits::default()
        };
        let r = run_blobs(
            &site,
            &blobs,
            ApplyOptions {
                limits,
                ..Default::default()
            },
        );
        assert!(
            matches!(r, Err(ApplyError::UncompressedTooLarge { .. })),
            "{mt}: {r:?}"
        );
        let written = std::fs::metadata(site.staging().join("bomb"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 4 << 20, "wrote {written} bytes");
    }
    // The total over layers is capped too.
    let site = Site::new();
    let blobs: Vec<_> = (0..3)
        .map(|i| {
            blob(
                &site.blobs(),
                &Layer::new()
                    .file(&format!("f{i}"), ROOT, &vec![1u8; 1 << 20])
                    .finish(),
                TAR,
            )
        })
        .collect();
    let limits = Limits {
        max_total_uncompressed: (5 << 20) / 2,
        ..Limits::default()
    };
    let r = run_blobs(
        &site,
        &blobs,
        ApplyOptions {
            limits,
            ..Default::default()
        },
    );
    assert!(
        matches!(r, Err(ApplyError::UncompressedTooLarge { .. })),
        "{r:?}"
    );
}

#[test]
fn digest_mismatch_applies_nothing() {
    let site = Site::new();
    let good = Layer::new().file("a", ROOT, b"good").finish();
    let evil = Layer::new()
        .file("a", ROOT, b"evil")
        .file("b", ROOT, b"more")
        .finish();
    let (path, mut desc) = blob(&site.blobs(), &good, TAR);
    // Same size, other content: only the hash can tell.
    let mut same_size = evil.clone();
    same_size.truncate(good.len());
    same_size.resize(good.len(), 0);
    std::fs::write(&path, &same_size).unwrap();
    let r = run_blobs(
        &site,
        &[(path.clone(), desc.clone())],
        ApplyOptions::default(),
    );
    assert!(matches!(r, Err(ApplyError::DigestMismatch { .. })), "{r:?}");
    assert_eq!(
        std::fs::read_dir(site.staging()).unwrap().count(),
        0,
        "applied before verifying"
    );
    // A size that differs from the descriptor.
    std::fs::write(&path, &evil).unwrap();
    let r = run_blobs(
        &site,
        &[(path.clone(), desc.clone())],
        ApplyOptions::default(),
    );
    assert!(matches!(r, Err(ApplyError::SizeMismatch { .. })), "{r:?}");
    // A digest we cannot verify.
    desc.digest = "md5:abc".into();
    let r = run_blobs(
        &site,
        &[(path.clone(), desc.clone())],
        ApplyOptions::default(),
    );
    assert!(matches!(r, Err(ApplyError::BadDigest(_))), "{r:?}");
    // Not a tar layer.
    let (path, mut desc) = blob(&site.blobs(), &good, TAR);
    desc.media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into();
    let r = run_blobs(&site, &[(path, desc)], ApplyOptions::default());
    assert!(matches!(r, Err(ApplyError::MediaType { .. })), "{r:?}");
    assert_eq!(std::fs::read_dir(site.staging()).unwrap().count(), 0);
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    let site = Site::new();
    let mut junk = gzip(&Layer::new().file("a", ROOT, &vec![3u8; 100_000]).finish());
    let n = junk.len();
    junk.truncate(n / 2);
    let blobs = vec![blob(&site.blobs(), &junk, GZIP)];
    let r = run_blobs(&site, &blobs, ApplyOptions::default());
    assert!(matches!(r, Err(ApplyError::Corrupt { .. })), "{r:?}");
}

#[test]
fn too_many_entries() {
    let site = Site::new();
    let mut l = Layer::new();
    for i in 0..50 {
        l.file(&format!("f{i}"), ROOT, b"");
    }
    let blobs = vec![blob(&site.blobs(), &l.finish(), TAR)];
    let limits = Limits {
        max_entries: 20,
        ..Limits::default()
    };
    let r = run_blobs(
        &site,
        &blobs,
        ApplyOptions {
            limits,
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(ApplyError::TooManyEntries { .. })), "{r:?}");
}

#[test]
fn hostile_root_entry_cannot_open_the_staging_dir() {
    // A `./` entry with mode 0777 owned by a user must not make the staging root
    // reachable on the host: setuid binaries and device nodes live below it.
    let site = Site::new();
    let l = Layer::new()
        .dir("./", m(0o777, 1000, 1000))
        .file("su", m(0o4755, 0, 0), b"x")
        .finish();
    let blobs = vec![blob(&site.blobs(), &l, TAR)];
    run_blobs(&site, &blobs, ApplyOptions::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(site.staging()).unwrap();
    assert_eq!(md.mode() & 0o777, 0o700);
    assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
}
