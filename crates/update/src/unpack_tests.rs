//! Hostile and broken tarballs against the strict unpacker.

use super::*;
use crate::contents::{Contents, FileEntry};
use crate::sums::hex;
use sha2::Digest;

const T: &str = "x86_64-unknown-linux-gnu";
const TOP: &str = "banger-1.0.0-x86_64-unknown-linux-gnu";

fn entry(path: &str, data: &[u8]) -> FileEntry {
    FileEntry {
        path: path.into(),
        size: data.len() as u64,
        sha256: hex(&sha2::Sha256::digest(data)),
    }
}

fn contents(files: Vec<FileEntry>) -> Contents {
    Contents {
        schema: 1,
        version: "1.0.0".into(),
        commit: "abc1234".into(),
        built_at: "2025-01-01T00:00:00Z".into(),
        target: T.into(),
        files,
    }
}

enum E<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, tar::EntryType, &'a str),
    Dir(&'a str),
}

fn tarball(dir: &Path, entries: &[E]) -> PathBuf {
    let p = dir.join("r.tar.gz");
    let f = std::fs::File::create(&p).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::fast(),
    ));
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match e {
            E::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                // Raw name bytes: the builder itself refuses `..`, a hostile one does not.
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            E::Link(path, kind, target) => {
                h.set_entry_type(*kind);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            E::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
    p
}

fn good_files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("bin/banger", b"cli"),
        ("bin/bangerd", b"daemon"),
        ("lib/banger-agent", b"agent"),
    ]
}

fn manifest_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    serde_json::to_vec(&contents(files.iter().map(|(p, d)| entry(p, d)).collect())).unwrap()
}

fn unpack_entries(
    entries: &[E],
) -> (
    tempfile::TempDir,
    Result<(Contents, Vec<Unpacked>), UnpackError>,
) {
    let t = tempfile::tempdir().unwrap();
    let tar = tarball(t.path(), entries);
    let dest = t.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let r = unpack(&tar, "1.0.0", T, &dest);
    (t, r)
}

fn with_manifest<'a>(m: &'a [u8], rest: Vec<E<'a>>) -> Vec<E<'a>> {
    let mut v = vec![E::File(leak(format!("{TOP}/manifest.json")), m)];
    v.extend(rest);
    v
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn p(rel: &str) -> &'static str {
    leak(format!("{TOP}/{rel}"))
}

#[test]
fn a_good_release_unpacks_with_modes() {
    let files = good_files();
    let m = manifest_bytes(&files);
    let entries = with_manifest(&m, files.iter().map(|(r, d)| E::File(p(r), d)).collect());
    let (t, r) = unpack_entries(&entries);
    let (c, out) = r.unwrap();
    assert_eq!(c.commit, "abc1234");
    assert_eq!(out.len(), 3);
    let bin = t.path().join("out/bin/banger");
    assert_eq!(std::fs::read(&bin).unwrap(), b"cli");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn unknown_files_are_checked_but_not_written() {
    let mut files = good_files();
    files.push(("lib/banger-future", b"later"));
    let m = manifest_bytes(&files);
    let entries = with_manifest(&m, files.iter().map(|(r, d)| E::File(p(r), d)).collect());
    let (t, r) = unpack_entries(&entries);
    assert_eq!(r.unwrap().1.len(), 3);
    assert!(!t.path().join("out/lib/banger-future").exists());
}

#[test]
fn hostile_tarballs_are_refused() {
    let files = good_files();
    let m = manifest_bytes(&files);
    let good: Vec<E> = files.iter().map(|(r, d)| E::File(p(r), d)).collect();
    type Case<'a> = (&'a str, Vec<E<'a>>, fn(&UnpackError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "symlink",
            with_manifest(
                &m,
                vec![E::Link(p("bin/banger"), tar::EntryType::Symlink, "/bin/sh")],
            ),
            |e| matches!(e, UnpackError::NotRegular { .. }),
        ),
        (
            "hardlink",
            with_manifest(
                &m,
                vec![E::Link(
                    p("bin/banger"),
                    tar::EntryType::Link,
                    "/etc/shadow",
                )],
            ),
            |e| matches!(e, UnpackError::NotRegular { .. }),
        ),
        (
            "directory",
            with_manifest(&m, vec![E::Dir(p("bin"))]),
            |e| matches!(e, UnpackError::NotRegular { .. }),
        ),
        (
            "unlisted",
            with_manifest(&m, vec![E::File(p("bin/sh"), b"x")]),
            |e| matches!(e, UnpackError::Unlisted(_)),
        ),
        (
            "traversal",
            with_manifest(
                &m,
                vec![E::File(leak(format!("{TOP}/../bin/banger")), b"cli")],
            ),
            |e| matches!(e, UnpackError::Unlisted(_) | UnpackError::Read(_)),
        ),
        (
            "other top",
            with_manifest(&m, vec![E::File("banger-9.9.9-x/bin/banger", b"cli")]),
            |e| matches!(e, UnpackError::Unlisted(_)),
        ),
        (
            "twice",
            with_manifest(
                &m,
                vec![
                    E::File(p("bin/banger"), b"cli"),
                    E::File(p("bin/banger"), b"cli"),
                ],
            ),
            |e| matches!(e, UnpackError::Unlisted(_)),
        ),
        (
            "size",
            with_manifest(&m, vec![E::File(p("bin/banger"), b"clix")]),
            |e| matches!(e, UnpackError::Mismatch { what: "size", .. }),
        ),
        (
            "hash",
            with_manifest(&m, vec![E::File(p("bin/banger"), b"CLI")]),
            |e| matches!(e, UnpackError::Mismatch { what: "sha256", .. }),
        ),
        (
            "missing",
            with_manifest(&m, vec![E::File(p("bin/banger"), b"cli")]),
            |e| matches!(e, UnpackError::Missing(_)),
        ),
        (
            "manifest not first",
            {
                let mut v: Vec<E> = vec![E::File(p("bin/banger"), b"cli")];
                v.extend(with_manifest(&m, vec![]));
                v
            },
            |e| matches!(e, UnpackError::NoContents(_)),
        ),
        ("empty", vec![], |e| matches!(e, UnpackError::NoContents(_))),
    ];
    for (what, entries, ok) in cases {
        let (t, r) = unpack_entries(&entries);
        let e = r.err().unwrap_or_else(|| panic!("{what} was accepted"));
        assert!(ok(&e), "{what}: {e}");
        assert!(
            !t.path().join("bin").exists() && !t.path().join("etc").exists(),
            "{what} wrote outside"
        );
    }
    // The good entries after a bad manifest (another version).
    let other = serde_json::to_vec(&Contents {
        version: "1.0.1".into(),
        ..contents(vec![])
    })
    .unwrap();
    let (_t, r) = unpack_entries(&with_manifest(&other, good));
    assert!(matches!(r, Err(UnpackError::Contents(_))));
}

#[test]
fn not_a_tarball() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("x.tar.gz");
    std::fs::write(&f, b"definitely not gzip").unwrap();
    assert!(matches!(
        unpack(&f, "1.0.0", T, t.path()),
        Err(UnpackError::Read(_) | UnpackError::NoContents(_))
    ));
}
