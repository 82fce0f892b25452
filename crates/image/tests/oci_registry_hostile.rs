//! A hostile registry on loopback: oversized manifests, tokens and error bodies, a
//! token realm elsewhere, too many layers, layers over the total cap. Each pull is
//! refused with a message that says why, before anything large is read or any
//! layer is downloaded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_image::oci::{fetch, BlobCache, Limits, PullError, PullOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send a Content-Length header.
    length: bool,
    /// Answer 401 with this challenge unless the request carries `Bearer <token>`.
    token: Option<(String, String)>,
}

fn ok(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body,
        length: false,
        token: None,
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Reply>>,
    log: Mutex<Vec<String>>,
}

struct Server {
    host: String,
    shared: Arc<Shared>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Server { host, shared }
    }

    fn route(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    fn reference(&self) -> String {
        format!("{}/hostile/image:latest", self.host)
    }

    fn opts(&self) -> PullOptions {
        PullOptions {
            plain_http: vec![self.host.clone()],
            ..Default::default()
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authorization = v.trim().to_string();
                    }
                }
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    shared.log.lock().unwrap().push(path.clone());
    let reply = shared.routes.lock().unwrap().get(&path).cloned();
    let mut reply = reply.unwrap_or(Reply {
        status: 404,
        headers: vec![],
        body: vec![],
        length: true,
        token: None,
    });
    if let Some((token, realm)) = reply.token.clone() {
        if authorization != format!("Bearer {token}") {
            reply = challenge(&realm);
        }
    }
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if reply.length {
        head += &format!("Content-Length: {}\r\n", reply.body.len());
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&reply.body);
    let _ = out.flush();
}

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn digest(n: u32) -> String {
    format!("sha256:{:064x}", n)
}

fn manifest(layers: usize, layer_size: u64) -> Vec<u8> {
    let layers: Vec<_> = (0..layers)
        .map(|i| {
            serde_json::json!({"mediaType": LAYER, "digest": digest(i as u32 + 1), "size": layer_size})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(0), "size": 100},
        "layers": layers,
    }))
    .unwrap()
}

async fn pull(s: &Server, opts: &PullOptions) -> (PullError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(dir.path().join("blobs"));
    let e = fetch(&s.reference(), &cache, opts, &mut |_| {})
        .await
        .expect_err("the pull must be refused");
    (e, dir)
}

fn blob_requests(s: &Server) -> usize {
    s.requests()
        .iter()
        .filter(|p| p.contains("/blobs/"))
        .count()
}

const MANIFEST: &str = "/v2/hostile/image/manifests/latest";

#[tokio::test]
async fn an_oversized_manifest_is_refused() {
    let s = Server::start();
    // Valid JSON followed by 8 MiB of (valid) whitespace, no Content-Length.
    let mut body = manifest(1, 10);
    body.extend(std::iter::repeat_n(b' ', 8 << 20));
    s.route(MANIFEST, ok(body));
    let (e, _d) = pull(&s, &s.opts()).await;
    let msg = e.to_string();
    assert!(
        msg.contains("manifest") && msg.contains("larger than"),
        "{msg}"
    );
    assert_eq!(blob_requests(&s), 0);
}

fn challenge(realm: &str) -> Reply {
    Reply {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer realm=\"{realm}\",service=\"test\""),
        )],
        body: vec![],
        length: true,
        token: None,
    }
}

#[tokio::test]
async fn an_oversized_token_is_refused() {
    let s = Server::start();
    s.route(MANIFEST, challenge(&format!("http://{}/token", s.host)));
    let token = format!("{{\"token\":\"{}\"}}", "a".repeat(1 << 20));
    s.route("/token", ok(token.into_bytes()));
    let (e, _d) = pull(&s, &s.opts()).await;
    let msg = e.to_string();
    assert!(msg.contains("token response"), "{msg}");
}

#[tokio::test]
async fn a_token_realm_elsewhere_over_http_is_not_contacted() {
    let s = Server::start();
    // `.invalid` never resolves: refusing must happen before any lookup.
    s.route(MANIFEST, challenge("http://banger-test.invalid/token"));
    let (e, _d) = pull(&s, &s.opts()).await;
    let msg = e.to_string();
    assert!(msg.contains("token") && msg.contains("refusing"), "{msg}");
    // A realm on another port of the same host is not the registry either.
    s.route(MANIFEST, challenge("http://127.0.0.1:9/token"));
    let (e, _d) = pull(&s, &s.opts()).await;
    assert!(e.to_string().contains("refusing"), "{e}");
}

#[tokio::test]
async fn too_many_layers_are_refused_before_any_download() {
    let s = Server::start();
    s.route(MANIFEST, ok(manifest(300, 10)));
    let (e, _d) = pull(&s, &s.opts()).await;
    let msg = e.to_string();
    assert!(msg.contains("300 layers"), "{msg}");
    assert_eq!(blob_requests(&s), 0);
}

#[tokio::test]
async fn layers_over_the_total_cap_are_refused_before_any_download() {
    let s = Server::start();
    s.route(MANIFEST, ok(manifest(3, 1000)));
    let opts = PullOptions {
        limits: Limits {
            max_total_compressed: 2500,
            ..Limits::default()
        },
        ..s.opts()
    };
    let (e, _d) = pull(&s, &opts).await;
    assert!(
        matches!(e, PullError::TotalTooLarge { cap: 2500, .. }),
        "{e:?}"
    );
    assert_eq!(blob_requests(&s), 0);
}

#[tokio::test]
async fn a_huge_error_body_is_cut_short() {
    let s = Server::start();
    let mut body = b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'x', 16 << 20));
    s.route(
        MANIFEST,
        Reply {
            status: 404,
            headers: vec![],
            body,
            length: false,
            token: None,
        },
    );
    let (e, _d) = pull(&s, &s.opts()).await;
    let msg = e.to_string();
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.len() < 2000, "error message of {} bytes", msg.len());
}

#[tokio::test]
async fn a_token_from_the_registry_itself_is_fetched_and_used() {
    let s = Server::start();
    let realm = format!("http://{}/token", s.host);
    // The manifest needs the token; the realm is the plain registry itself.
    let mut m = ok(manifest(300, 10));
    m.token = Some(("good".into(), realm.clone()));
    s.route(MANIFEST, m);
    s.route("/token", ok(br#"{"token":"good"}"#.to_vec()));
    let (e, _d) = pull(&s, &s.opts()).await;
    // Past authentication: refused for its layer count, which needs the manifest.
    assert!(e.to_string().contains("300 layers"), "{e}");
    assert_eq!(
        s.requests(),
        [MANIFEST, "/token", MANIFEST],
        "one challenge, one token, one retry"
    );
}
