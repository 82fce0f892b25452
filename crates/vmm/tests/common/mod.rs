//! A fake Firecracker API server on a unix socket: a raw HTTP/1.1 responder that
//! records every request and answers the way Firecracker does (204 for accepted
//! configuration, 200 + JSON for `GET /`, 4xx with `{"fault_message": ...}` for
//! rejected input). Shared by the client tests and the launch tests.

#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
}

/// How the fake answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer `(method, path)` with `(status, raw body)` instead of 204.
    pub fail: Option<(String, String, u16, String)>,
    /// Accept connections but never answer.
    pub hang: bool,
}

/// What the server calls for every request it records (after answering).
pub type OnRequest = Arc<dyn Fn(&Seen) + Send + Sync>;

pub struct FakeServer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    /// Serve on `socket` in a background task until the runtime ends.
    pub fn spawn(socket: &Path, behaviour: Behaviour, on_request: Option<OnRequest>) -> FakeServer {
        let listener = UnixListener::bind(socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, b, cb) = (s.clone(), behaviour.clone(), on_request.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, &s, &b, cb).await;
                });
            }
        });
        FakeServer { seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_connection(
    stream: UnixStream,
    seen: &Mutex<Vec<Seen>>,
    b: &Behaviour,
    on_request: Option<OnRequest>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let body = (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap_or(Value::Null));
        let req = Seen { method, path, body };
        seen.lock().unwrap().push(req.clone());
        if b.hang {
            std::future::pending::<()>().await;
        }
        let (status, text) = match &b.fail {
            Some((m, p, status, text)) if *m == req.method && *p == req.path => (*status, text.clone()),
            _ if req.method == "GET" && req.path == "/" => (
                200,
                r#"{"id":"fake","state":"Not started","vmm_version":"1.14.1","app_name":"Firecracker"}"#.to_string(),
            ),
            _ => (204, String::new()),
        };
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            _ => "Error",
        };
        let head = if text.is_empty() {
            format!("HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\n\r\n")
        } else {
            format!(
                "HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                text.len()
            )
        };
        // Record before answering: once the client has its answer, the request must
        // be visible to the test (recording afterwards raced the test's assertions).
        if let Some(cb) = &on_request {
            cb(&req);
        }
        w.write_all(head.as_bytes()).await?;
        w.write_all(text.as_bytes()).await?;
        w.flush().await?;
    }
}

/// A representative machine: initrd, three disks (read-only base, overlay, work) and a
/// network interface, like `vm create` builds.
pub fn full_spec(runtime_dir: &Path) -> banger_vmm::MachineSpec {
    use banger_vmm::{DiskSpec, MachineSpec, NetSpec};
    MachineSpec {
        id: "0a1b2c3d4e5f".into(),
        cpus: 2,
        memory_mib: 1024,
        kernel: "/var/lib/banger/images/i1/vmlinux".into(),
        initrd: Some("/var/lib/banger/images/i1/initrd.img".into()),
        cmdline: "banger.ip=172.30.0.2/24 banger.gw=172.30.0.1 banger.hostname=dev".into(),
        disks: vec![
            DiskSpec {
                path: "/var/lib/banger/images/i1/rootfs.ext4".into(),
                read_only: true,
            },
            DiskSpec {
                path: "/var/lib/banger/vms/v1/overlay.ext4".into(),
                read_only: false,
            },
            DiskSpec {
                path: "/var/lib/banger/vms/v1/work.ext4".into(),
                read_only: false,
            },
        ],
        net: Some(NetSpec {
            tap: "bgr0a1b2c3d".into(),
            mac: "06:ba:ac:1e:00:02".into(),
            unplugged: false,
            backend: Default::default(),
        }),
        runtime_dir: runtime_dir.to_path_buf(),
        restore: None,
    }
}

/// The smallest machine: no initrd, one disk, no network.
pub fn minimal_spec(runtime_dir: &Path) -> banger_vmm::MachineSpec {
    let mut s = full_spec(runtime_dir);
    s.cpus = 1;
    s.memory_mib = 128;
    s.initrd = None;
    s.cmdline = String::new();
    s.disks.truncate(1);
    s.net = None;
    s
}
