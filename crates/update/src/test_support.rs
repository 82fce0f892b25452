//! Test helpers shared by this crate's tests and the CLI's update tests (feature
//! `test-support`): a loopback HTTP server that serves a directory and can misbehave on
//! purpose, and random signing keys.

use crate::signature::PrivateKey;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A key pair generated now.
pub fn random_key() -> PrivateKey {
    use rand::RngCore;
    loop {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        if let Ok(k) = PrivateKey::from_bytes(&b) {
            return k;
        }
    }
}

/// How the server misbehaves for one path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Announce the file's full length, send only this many bytes, close.
    Truncate(u64),
    /// Answer with this status and no body.
    Status(u16),
    /// Redirect (302) to this URL.
    Redirect(String),
}

#[derive(Default)]
struct Shared {
    faults: HashMap<String, Fault>,
    log: Vec<String>,
}

/// A static file server on a loopback listener; each request on its own thread. It
/// lives as long as the test process (the listener thread is detached).
#[derive(Clone)]
pub struct Server {
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl Server {
    /// Serve `root` on 127.0.0.1, any free port.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        Self::from_listener(TcpListener::bind("127.0.0.1:0")?, root)
    }

    /// Serve `root` on an existing listener (e.g. one bound in a network namespace).
    pub fn from_listener(l: TcpListener, root: &Path) -> std::io::Result<Self> {
        let port = l.local_addr()?.port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = shared.clone();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let s3 = s2.clone();
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &root, &s3);
                });
            }
        });
        Ok(Self { port, shared })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Misbehave for `path` (as requested, e.g. `/v1.0.0/SHA256SUMS`).
    pub fn fault(&self, path: &str, f: Fault) {
        if let Ok(mut s) = self.shared.lock() {
            s.faults.insert(path.to_string(), f);
        }
    }

    /// Behave again.
    pub fn clear_faults(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.faults.clear();
        }
    }

    /// Paths requested so far (and forget them).
    pub fn take_log(&self) -> Vec<String> {
        self.shared
            .lock()
            .map(|mut s| std::mem::take(&mut s.log))
            .unwrap_or_default()
    }
}

fn handle(mut conn: TcpStream, root: &Path, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?.take(16 << 10));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let fault = {
        let mut s = shared
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        s.log.push(path.clone());
        s.faults.get(&path).cloned()
    };
    let file = safe_join(root, &path).and_then(|p| std::fs::read(p).ok());
    match (fault, file) {
        (Some(Fault::Status(code)), _) => write!(
            conn,
            "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        (Some(Fault::Redirect(to)), _) => write!(
            conn,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        (_, None) => write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        (f, Some(body)) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            let n = match f {
                Some(Fault::Truncate(n)) => (n as usize).min(body.len()),
                _ => body.len(),
            };
            conn.write_all(&body[..n])?;
            conn.flush()
        }
    }
}

fn safe_join(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}
