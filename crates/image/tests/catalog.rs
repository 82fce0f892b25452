//! Catalog index parsing and verified downloads, against a real HTTP server on
//! 127.0.0.1 that can lie about sizes, hashes and status codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_image::catalog::{
    download, fetch_index, Artifact, CatalogError, CatalogIndex, Location, MAX_INDEX_BYTES,
};
use banger_image::oci::BlobCache;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// A tiny HTTP/1.1 server that answers GETs from a route table, one thread per
// connection, always `Connection: close`.

#[derive(Clone)]
enum Reply {
    /// 200 with `body`; `content_length` is the header sent (it may lie), or none at
    /// all (the body then ends when the connection closes).
    Body {
        body: Vec<u8>,
        content_length: Option<u64>,
    },
    /// 200 without Content-Length, writing up to `total` zero bytes lazily and
    /// reporting (bytes written, whether a write failed) on the server's channel.
    Endless { total: u64 },
    /// An empty answer with this status.
    Status(u16),
    /// 302 to this location.
    Redirect(String),
}

/// What the server knows: its routes, the paths it was asked for, and where to
/// report how an endless body ended.
#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Reply>>,
    log: Mutex<Vec<String>>,
    endless: Mutex<Option<mpsc::Sender<(u64, bool)>>>,
}

struct Server {
    base: String,
    shared: Arc<Shared>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Server { base, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn route(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    fn body(&self, path: &str, body: &[u8]) {
        self.route(
            path,
            Reply::Body {
                body: body.to_vec(),
                content_length: Some(body.len() as u64),
            },
        );
    }

    fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    fn endless_reports(&self) -> mpsc::Receiver<(u64, bool)> {
        let (tx, rx) = mpsc::channel();
        *self.shared.endless.lock().unwrap() = Some(tx);
        rx
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    shared.log.lock().unwrap().push(path.clone());
    let reply = shared
        .routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Reply::Status(404));
    let mut out = stream;
    match reply {
        Reply::Body {
            body,
            content_length,
        } => {
            let mut head = "HTTP/1.1 200 OK\r\nConnection: close\r\n".to_string();
            if let Some(n) = content_length {
                head += &format!("Content-Length: {n}\r\n");
            }
            head += "\r\n";
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
        }
        Reply::Endless { total } => {
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0u8; 64 << 10];
            let mut written = 0u64;
            let mut broke = false;
            while written < total {
                if out.write_all(&chunk).is_err() {
                    broke = true;
                    break;
                }
                written += chunk.len() as u64;
            }
            if let Some(tx) = shared.endless.lock().unwrap().as_ref() {
                let _ = tx.send((written, broke));
            }
        }
        Reply::Status(code) => {
            let _ = write!(
                out,
                "HTTP/1.1 {code} Nope\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
        }
        Reply::Redirect(to) => {
            let _ = write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
        }
    }
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------
// Helpers.

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic, non-repeating-ish content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn artifact(url: Location, bytes: &[u8]) -> Artifact {
    Artifact {
        url,
        sha256: sha(bytes),
        size: bytes.len() as u64,
    }
}

fn http(server: &Server, path: &str, bytes: &[u8]) -> Artifact {
    artifact(Location::Url(server.url(path)), bytes)
}

const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HEX_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const HEX_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// A valid index: one kernel with modules, one without, one image.
fn sample() -> Value {
    json!({
        "version": 1,
        "publisher": "ignored: unknown fields are forward compatible",
        "kernels": [
            {"name": "debian-6.1-cloud", "release": "6.1.0-40-cloud-amd64",
             "description": "Debian 12 cloud kernel", "future": {"x": 1},
             "kernel": {"url": "kernels/vmlinuz-6.1", "sha256": HEX_A, "size": 8123456},
             "modules": {"url": "kernels/modules-6.1.tar.zst", "sha256": HEX_B, "size": 12345678}},
            {"name": "mono_lithic.1", "release": "6.6.0",
             "kernel": {"url": "../shared/vmlinuz 6.6", "sha256": HEX_C, "size": 1}}
        ],
        "images": [
            {"name": "debian-bookworm", "description": "Debian 12 with build-essential",
             "kernel": "debian-6.1-cloud",
             "rootfs": {"url": "https://mirror.example/images/debian-bookworm.tar.zst",
                        "sha256": HEX_A, "size": 300000000}}
        ]
    })
}

fn parse(v: &Value, base: &Location) -> Result<CatalogIndex, CatalogError> {
    CatalogIndex::parse(v.to_string().as_bytes(), base)
}

fn http_base() -> Location {
    Location::Url("http://127.0.0.1:9/cat/index.json".to_string())
}

fn cache() -> (tempfile::TempDir, BlobCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(dir.path().join("cache"));
    (dir, cache)
}

/// Nothing under the digest's name and no temporary file left behind.
fn assert_clean(cache: &BlobCache, a: &Artifact) {
    assert!(
        !cache.path(&a.digest()).unwrap().exists(),
        "blob must not land in the cache"
    );
    let tmp = cache.dir().join("tmp");
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

async fn fetch(a: &Artifact, cache: &BlobCache) -> Result<PathBuf, CatalogError> {
    download(a, cache, 1 << 30, &mut |_, _| {}).await
}

// ---------------------------------------------------------------------------------
// Index parsing.

#[test]
fn parses_and_resolves_against_an_http_base() {
    let index = parse(&sample(), &http_base()).unwrap();
    assert_eq!(index.location(), &http_base());
    let k = index.kernel("debian-6.1-cloud").unwrap();
    assert_eq!(k.release, "6.1.0-40-cloud-amd64");
    assert_eq!(k.description, "Debian 12 cloud kernel");
    assert_eq!(
        k.kernel.url,
        Location::Url("http://127.0.0.1:9/cat/kernels/vmlinuz-6.1".into())
    );
    assert_eq!(k.kernel.size, 8123456);
    assert_eq!(k.kernel.digest(), format!("sha256:{HEX_A}"));
    let m = k.modules.as_ref().unwrap();
    assert_eq!(
        m.url,
        Location::Url("http://127.0.0.1:9/cat/kernels/modules-6.1.tar.zst".into())
    );
    let mono = index.kernel("mono_lithic.1").unwrap();
    assert!(mono.modules.is_none());
    assert_eq!(mono.description, "");
    assert_eq!(
        mono.kernel.url,
        Location::Url("http://127.0.0.1:9/shared/vmlinuz%206.6".into())
    );
    let img = index.image("debian-bookworm").unwrap();
    assert_eq!(img.kernel, "debian-6.1-cloud");
    assert_eq!(
        img.rootfs.url,
        Location::Url("https://mirror.example/images/debian-bookworm.tar.zst".into())
    );
    assert_eq!(
        index.kernel_names().collect::<Vec<_>>(),
        ["debian-6.1-cloud", "mono_lithic.1"]
    );
    assert_eq!(index.image_names().collect::<Vec<_>>(), ["debian-bookworm"]);
    assert_eq!(index.images().len(), 1);
    assert_eq!(index.kernels().len(), 2);
}

#[test]
fn parses_and_resolves_against_a_path_base() {
    let mut v = sample();
    v["kernels"][0]["modules"]["url"] = json!("file:///srv/other/modules.tar");
    let base = Location::Path("/srv/cat/index.json".into());
    let index = parse(&v, &base).unwrap();
    let k = index.kernel("debian-6.1-cloud").unwrap();
    assert_eq!(
        k.kernel.url,
        Location::Path("/srv/cat/kernels/vmlinuz-6.1".into())
    );
    assert_eq!(
        k.modules.as_ref().unwrap().url,
        Location::Path("/srv/other/modules.tar".into())
    );
    // Percent-encoding and `..` are resolved like a URL, then turned back into a path.
    assert_eq!(
        index.kernel("mono_lithic.1").unwrap().kernel.url,
        Location::Path("/srv/shared/vmlinuz 6.6".into())
    );
    // Absolute http(s) URLs stay URLs.
    assert!(matches!(
        index.image("debian-bookworm").unwrap().rootfs.url,
        Location::Url(_)
    ));
}

#[test]
fn empty_lists_are_fine() {
    let index = parse(&json!({"version": 1}), &http_base()).unwrap();
    assert_eq!(index.image_names().count(), 0);
    assert_eq!(index.kernel_names().count(), 0);
}

#[test]
fn unknown_names_list_what_is_available() {
    let index = parse(&sample(), &http_base()).unwrap();
    match index.image("debian-trixie") {
        Err(CatalogError::UnknownImage { name, available }) => {
            assert_eq!(name, "debian-trixie");
            assert_eq!(available, ["debian-bookworm"]);
        }
        other => panic!("{other:?}"),
    }
    let err = index.kernel("nope").unwrap_err();
    assert!(matches!(err, CatalogError::UnknownKernel { .. }), "{err:?}");
    assert!(
        err.to_string().contains("debian-6.1-cloud, mono_lithic.1"),
        "{err}"
    );
}

#[test]
fn unsupported_version_says_upgrade() {
    let mut v = sample();
    v["version"] = json!(2);
    // Even if the rest is unreadable: the version decides first.
    v["kernels"] = json!("a format from the future");
    let err = parse(&v, &http_base()).unwrap_err();
    assert!(
        matches!(err, CatalogError::UnsupportedVersion { version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade banger"), "{err}");
}

#[test]
fn malformed_json_reports_line_or_path() {
    let err = CatalogIndex::parse(b"{\n  \"version\": 1,\n  oops\n}", &http_base()).unwrap_err();
    match &err {
        CatalogError::IndexParse { at, .. } => assert!(at.starts_with("line 3"), "{at}"),
        other => panic!("{other:?}"),
    }
    let err = parse(&json!({"kernels": []}), &http_base()).unwrap_err();
    assert!(
        matches!(&err, CatalogError::IndexParse { at, .. } if at == "version"),
        "{err:?}"
    );
    let err = parse(&json!([1]), &http_base()).unwrap_err();
    assert!(matches!(err, CatalogError::IndexParse { .. }), "{err:?}");

    let mut v = sample();
    v["kernels"][1]["kernel"]
        .as_object_mut()
        .unwrap()
        .remove("sha256");
    let err = parse(&v, &http_base()).unwrap_err();
    match &err {
        CatalogError::IndexParse { at, message, .. } => {
            assert_eq!(at, "kernels[1].kernel");
            assert!(message.contains("sha256"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut v = sample();
    v["images"][0]["rootfs"]["size"] = json!(-5);
    let err = parse(&v, &http_base()).unwrap_err();
    assert!(
        matches!(&err, CatalogError::IndexParse { at, .. } if at == "images[0].rootfs"),
        "{err:?}"
    );
}

#[test]
fn each_rule_is_enforced() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "empty name",
            |v| v["kernels"][0]["name"] = json!(""),
            "kernels[0].name",
        ),
        (
            "long name",
            |v| v["images"][0]["name"] = json!("x".repeat(65)),
            "images[0].name",
        ),
        (
            "space in name",
            |v| v["images"][0]["name"] = json!("a b"),
            "images[0].name",
        ),
        (
            "slash in name",
            |v| v["images"][0]["name"] = json!("a/b"),
            "images[0].name",
        ),
        (
            "non-ascii name",
            |v| v["images"][0]["name"] = json!("débian"),
            "images[0].name",
        ),
        (
            "dot-dot name",
            |v| v["images"][0]["name"] = json!(".."),
            "images[0].name",
        ),
        (
            "duplicate kernel",
            |v| v["kernels"][1]["name"] = json!("debian-6.1-cloud"),
            "two kernels",
        ),
        (
            "duplicate image",
            |v| {
                let img = v["images"][0].clone();
                v["images"].as_array_mut().unwrap().push(img);
            },
            "two images",
        ),
        (
            "uppercase sha256",
            |v| v["kernels"][0]["kernel"]["sha256"] = json!(HEX_A.to_uppercase()),
            "kernels[0].kernel.sha256",
        ),
        (
            "short sha256",
            |v| v["kernels"][0]["modules"]["sha256"] = json!(&HEX_A[1..]),
            "kernels[0].modules.sha256",
        ),
        (
            "non-hex sha256",
            |v| v["images"][0]["rootfs"]["sha256"] = json!("g".repeat(64)),
            "images[0].rootfs.sha256",
        ),
        (
            "zero size",
            |v| v["images"][0]["rootfs"]["size"] = json!(0),
            "images[0].rootfs.size",
        ),
        (
            "missing kernel",
            |v| v["images"][0]["kernel"] = json!("debian-6.6"),
            "\"debian-6.6\"",
        ),
        (
            "unsupported scheme",
            |v| v["kernels"][0]["kernel"]["url"] = json!("ftp://example.org/vmlinuz"),
            "kernels[0].kernel.url",
        ),
        (
            "empty url",
            |v| v["kernels"][0]["kernel"]["url"] = json!(""),
            "kernels[0].kernel.url",
        ),
        (
            "remote index pointing at a local file",
            |v| v["kernels"][0]["kernel"]["url"] = json!("file:///etc/shadow"),
            "local file",
        ),
        (
            "slash in release",
            |v| v["kernels"][0]["release"] = json!("../../etc"),
            "kernels[0].release",
        ),
        (
            "escape sequence in description",
            |v| v["images"][0]["description"] = json!("\u{1b}[2Jgotcha"),
            "images[0].description",
        ),
    ];
    for (case, mutate, needle) in cases {
        let mut v = sample();
        mutate(&mut v);
        match parse(&v, &http_base()) {
            Err(e @ CatalogError::Invalid { .. }) => {
                assert!(e.to_string().contains(needle), "{case}: {e}")
            }
            other => panic!("{case}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn user_locations() {
    assert_eq!(
        Location::parse("https://Example.org/c/index.json").unwrap(),
        Location::Url("https://example.org/c/index.json".into())
    );
    assert_eq!(
        Location::parse("file:///srv/c/index.json").unwrap(),
        Location::Path("/srv/c/index.json".into())
    );
    let rel = Location::parse("c/index.json").unwrap();
    assert_eq!(
        rel,
        Location::Path(std::env::current_dir().unwrap().join("c/index.json"))
    );
    for bad in ["", "ftp://example.org/index.json"] {
        assert!(
            matches!(Location::parse(bad), Err(CatalogError::Invalid { .. })),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Fetching the index.

#[tokio::test]
async fn fetches_an_index_over_http_and_resolves_against_it() {
    let s = Server::start();
    s.body("/cat/index.json", sample().to_string().as_bytes());
    let index = fetch_index(&s.url("/cat/index.json")).await.unwrap();
    assert_eq!(
        index.kernel("debian-6.1-cloud").unwrap().kernel.url,
        Location::Url(s.url("/cat/kernels/vmlinuz-6.1"))
    );
    // After a redirect, relative URLs follow the index to where it was served from.
    s.route(
        "/latest/index.json",
        Reply::Redirect(s.url("/v2/index.json")),
    );
    s.body("/v2/index.json", sample().to_string().as_bytes());
    let index = fetch_index(&s.url("/latest/index.json")).await.unwrap();
    assert_eq!(
        index.kernel("debian-6.1-cloud").unwrap().kernel.url,
        Location::Url(s.url("/v2/kernels/vmlinuz-6.1"))
    );
}

#[tokio::test]
async fn fetches_an_index_from_a_path_or_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    std::fs::write(&path, sample().to_string()).unwrap();
    let want = Location::Path(dir.path().join("kernels/vmlinuz-6.1"));
    for loc in [
        path.to_str().unwrap().to_string(),
        format!("file://{}", path.display()),
    ] {
        let index = fetch_index(&loc).await.unwrap();
        assert_eq!(index.kernel("debian-6.1-cloud").unwrap().kernel.url, want);
    }
    let err = fetch_index(dir.path().join("missing.json").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::IndexFetch { .. }), "{err:?}");
}

#[tokio::test]
async fn refuses_an_oversized_index() {
    let s = Server::start();
    let big = vec![b' '; MAX_INDEX_BYTES as usize + 1];
    s.body("/big.json", &big);
    s.route(
        "/big-unannounced.json",
        Reply::Body {
            body: big.clone(),
            content_length: None,
        },
    );
    for p in ["/big.json", "/big-unannounced.json"] {
        let err = fetch_index(&s.url(p)).await.unwrap_err();
        assert!(matches!(err, CatalogError::IndexTooLarge { .. }), "{err:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    std::fs::write(&path, &big).unwrap();
    let err = fetch_index(path.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, CatalogError::IndexTooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn index_404_names_the_url() {
    let s = Server::start();
    let err = fetch_index(&s.url("/nowhere/index.json"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CatalogError::Http { status: 404, url } if url.ends_with("/nowhere/index.json")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------
// Downloads.

#[tokio::test]
async fn good_download_lands_in_the_cache_and_is_reused() {
    let s = Server::start();
    let bytes = content(300_000, 7);
    s.body("/images/x.tar.zst", &bytes);
    let a = http(&s, "/images/x.tar.zst", &bytes);
    let (_d, cache) = cache();
    let mut seen = vec![];
    let path = download(&a, &cache, 1 << 20, &mut |got, total| {
        seen.push((got, total))
    })
    .await
    .unwrap();
    assert_eq!(path, cache.path(&a.digest()).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(cache.has(&a.digest(), a.size));
    assert_eq!(seen.last(), Some(&(a.size, a.size)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(s.requests().len(), 1);

    let mut seen = vec![];
    let again = download(&a, &cache, 1 << 20, &mut |got, total| {
        seen.push((got, total))
    })
    .await
    .unwrap();
    assert_eq!(again, path);
    assert_eq!(seen, [(a.size, a.size)]);
    assert_eq!(s.requests().len(), 1, "served from the cache, no request");
    let tmp_left = std::fs::read_dir(cache.dir().join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0);
}

#[tokio::test]
async fn a_damaged_cached_blob_of_the_right_size_is_downloaded_again() {
    let s = Server::start();
    let bytes = content(50_000, 9);
    s.body("/k", &bytes);
    let a = http(&s, "/k", &bytes);
    let (_d, cache) = cache();
    let path = fetch(&a, &cache).await.unwrap();
    // Same size, other content (bit rot, or a blob renamed before its data was
    // durable and then lost in a crash).
    std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
    let again = fetch(&a, &cache).await.unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    assert_eq!(s.requests().len(), 2, "the damaged blob was not reused");
}

#[tokio::test]
async fn follows_redirects() {
    let s = Server::start();
    let bytes = content(1000, 1);
    s.route("/a", Reply::Redirect(s.url("/b")));
    s.body("/b", &bytes);
    let (_d, cache) = cache();
    let path = fetch(&http(&s, "/a", &bytes), &cache).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(s.requests(), ["/a", "/b"]);
}

#[tokio::test]
async fn plain_http_is_refused_for_other_hosts_and_after_redirects() {
    // `.invalid` never resolves: the refusal must come before any lookup.
    let err = fetch_index("http://banger-test.invalid/index.json")
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Insecure { .. }), "{err:?}");
    assert!(err.to_string().contains("refusing"), "{err}");
    let (_d, cache) = cache();
    let remote = artifact(
        Location::Url("http://banger-test.invalid/x".into()),
        b"data",
    );
    let err = fetch(&remote, &cache).await.unwrap_err();
    assert!(matches!(err, CatalogError::Insecure { .. }), "{err:?}");
    // A loopback server redirecting to a plain-http host elsewhere is not followed.
    let s = Server::start();
    s.route(
        "/index.json",
        Reply::Redirect("http://banger-test.invalid/index.json".into()),
    );
    let err = fetch_index(&s.url("/index.json")).await.unwrap_err();
    assert!(matches!(err, CatalogError::Insecure { .. }), "{err:?}");
    assert!(err.to_string().contains("loopback"), "{err}");
    s.route("/a", Reply::Redirect("http://banger-test.invalid/a".into()));
    let err = fetch(&http(&s, "/a", b"data"), &cache).await.unwrap_err();
    assert!(matches!(err, CatalogError::Insecure { .. }), "{err:?}");
    assert_clean(&cache, &http(&s, "/a", b"data"));
}

#[tokio::test]
async fn hash_mismatch_keeps_nothing() {
    let s = Server::start();
    let bytes = content(100_000, 3);
    let mut served = bytes.clone();
    served[50_000] ^= 1;
    s.body("/x", &served);
    let a = http(&s, "/x", &bytes);
    let (_d, cache) = cache();
    let err = fetch(&a, &cache).await.unwrap_err();
    match &err {
        CatalogError::HashMismatch { want, got, .. } => {
            assert_eq!(want, &a.sha256);
            assert_eq!(got, &sha(&served));
        }
        other => panic!("{other:?}"),
    }
    assert_clean(&cache, &a);
}

#[tokio::test]
async fn oversize_body_is_cut_off_early() {
    let s = Server::start();
    let reports = s.endless_reports();
    const TOTAL: u64 = 64 << 20;
    s.route("/endless", Reply::Endless { total: TOTAL });
    // Declared: 1 MiB of zeros; the server sends up to 64 MiB without Content-Length.
    let declared = vec![0u8; 1 << 20];
    let a = http(&s, "/endless", &declared);
    let (_d, cache) = cache();
    let started = Instant::now();
    let mut max_seen = 0;
    let err = download(&a, &cache, 1 << 30, &mut |got, _| max_seen = got)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::Oversize { size, .. } if size == a.size),
        "{err:?}"
    );
    assert!(err.to_string().contains("larger than the catalog says"));
    assert!(max_seen <= a.size);
    assert_clean(&cache, &a);
    // The server must see the client hang up long before it could send everything.
    // Wait off the runtime's thread: the client's connection task must keep running
    // to notice the dropped body and hang up.
    let (written, broke) =
        tokio::task::spawn_blocking(move || reports.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the server never finished writing");
    assert!(
        broke,
        "the server wrote all {written} bytes: the client kept reading"
    );
    assert!(written < TOTAL / 2, "the server wrote {written} bytes");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn content_length_above_declared_is_refused() {
    let s = Server::start();
    let bytes = content(10_000, 5);
    let mut served = bytes.clone();
    served.extend_from_slice(&bytes);
    s.body("/x", &served);
    let a = http(&s, "/x", &bytes);
    let (_d, cache) = cache();
    let err = fetch(&a, &cache).await.unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::LengthMismatch {
                announced: 20_000,
                size: 10_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_clean(&cache, &a);
}

#[tokio::test]
async fn truncated_body_is_refused() {
    let s = Server::start();
    let bytes = content(200_000, 9);
    // Close-delimited: the stream ends cleanly, short.
    s.route(
        "/short",
        Reply::Body {
            body: bytes[..150_000].to_vec(),
            content_length: None,
        },
    );
    // Announced at the right size, then the connection closes early.
    s.route(
        "/cut",
        Reply::Body {
            body: bytes[..150_000].to_vec(),
            content_length: Some(bytes.len() as u64),
        },
    );
    let (_d, cache) = cache();
    let a = http(&s, "/short", &bytes);
    let err = fetch(&a, &cache).await.unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Truncated {
                got: 150_000,
                want: 200_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_clean(&cache, &a);
    let a = http(&s, "/cut", &bytes);
    let err = fetch(&a, &cache).await.unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::Truncated { .. } | CatalogError::Transfer { .. }
        ),
        "{err:?}"
    );
    assert_clean(&cache, &a);
}

#[tokio::test]
async fn declared_size_above_cap_is_refused_without_a_request() {
    let s = Server::start();
    let bytes = content(5000, 2);
    s.body("/x", &bytes);
    let a = http(&s, "/x", &bytes);
    let (_d, cache) = cache();
    let err = download(&a, &cache, 4999, &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::TooLarge {
                declared: 5000,
                cap: 4999,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.requests().is_empty());
    assert_clean(&cache, &a);
    // Exactly at the cap is fine.
    download(&a, &cache, 5000, &mut |_, _| {}).await.unwrap();
}

#[tokio::test]
async fn http_error_names_the_url() {
    let s = Server::start();
    let bytes = content(10, 0);
    let a = http(&s, "/images/missing.tar.zst", &bytes);
    let (_d, cache) = cache();
    let err = fetch(&a, &cache).await.unwrap_err();
    assert!(
        matches!(&err, CatalogError::Http { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.contains(&s.url("/images/missing.tar.zst")), "{msg}");
    s.route("/boom", Reply::Status(500));
    let err = fetch(&http(&s, "/boom", &bytes), &cache).await.unwrap_err();
    assert!(
        matches!(&err, CatalogError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert_clean(&cache, &a);
}

#[tokio::test]
async fn file_artifacts_go_through_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(cat.join("images")).unwrap();
    let bytes = content(700_000, 4);
    std::fs::write(cat.join("images/root.tar"), &bytes).unwrap();
    std::fs::write(cat.join("images/big.tar"), [&bytes[..], b"x"].concat()).unwrap();
    let mut wrong = bytes.clone();
    wrong[0] ^= 0xff;
    std::fs::write(cat.join("images/wrong.tar"), &wrong).unwrap();
    std::fs::write(cat.join("images/short.tar"), &bytes[..1000]).unwrap();
    let entry = |file: &str| json!({"url": format!("images/{file}"), "sha256": sha(&bytes), "size": bytes.len()});
    let index = json!({
        "version": 1,
        "kernels": [{"name": "k", "release": "6.1.0",
                     "kernel": {"url": "images/root.tar", "sha256": sha(&bytes), "size": bytes.len()}}],
        "images": [
            {"name": "good", "kernel": "k", "rootfs": entry("root.tar")},
            {"name": "big", "kernel": "k", "rootfs": entry("big.tar")},
            {"name": "wrong", "kernel": "k", "rootfs": entry("wrong.tar")},
            {"name": "short", "kernel": "k", "rootfs": entry("short.tar")},
            {"name": "gone", "kernel": "k", "rootfs": entry("gone.tar")}
        ]
    });
    let index_path = cat.join("index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let index = fetch_index(&format!("file://{}", index_path.display()))
        .await
        .unwrap();
    let (_d, cache) = cache();
    let get = |name: &str| index.image(name).unwrap().rootfs.clone();

    let good = get("good");
    assert_eq!(good.url, Location::Path(cat.join("images/root.tar")));
    let path = fetch(&good, &cache).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(cache.has(&good.digest(), good.size));

    let (_d, cache) = self::cache();
    let err = fetch(&get("big"), &cache).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::LengthMismatch { .. }),
        "{err:?}"
    );
    let err = fetch(&get("wrong"), &cache).await.unwrap_err();
    assert!(matches!(err, CatalogError::HashMismatch { .. }), "{err:?}");
    let err = fetch(&get("short"), &cache).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::Truncated { got: 1000, .. }),
        "{err:?}"
    );
    let err = fetch(&get("gone"), &cache).await.unwrap_err();
    assert!(matches!(err, CatalogError::Io { .. }), "{err:?}");
    assert_clean(&cache, &good);
}
