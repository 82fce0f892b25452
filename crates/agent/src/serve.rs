//! The transports the agent serves the channel on.
//!
//! * The virtio-serial port `/dev/virtio-ports/org.banger.agent` (QEMU). It is one
//!   byte stream for the guest's whole life: host connections come and go on it, a
//!   read of 0 bytes means "no host connected now", and each new host starts with the
//!   channel's preamble and hello, which is how the agent tells connections apart.
//! * AF_VSOCK port 10789 (Firecracker, and QEMU with vhost-vsock): a real listener, one
//!   connection per host connection.
//! * A unix socket (`serve --listen`), for tests and debugging on a host.

use crate::handler::{Agent, Runs};
use banger_channel::sync::{serve, ServeError, ServerConfig};
use banger_channel::Limits;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The virtio-serial port name banger's VMM backends create.
pub const DEFAULT_PORT: &str = "org.banger.agent";

/// Connections served at once on the listeners (vsock, unix); more are closed at once.
const MAX_CONNECTIONS: usize = 16;

fn config(wait_for_peer: bool) -> ServerConfig {
    ServerConfig {
        software: format!("banger-agent {}", env!("CARGO_PKG_VERSION")),
        limits: Limits::default(),
        wait_for_peer,
    }
}

fn log_end(what: &str, r: &Result<(), ServeError>) {
    match r {
        Ok(()) | Err(ServeError::Goaway(_)) => {}
        Err(e) => eprintln!("banger-agent: {what}: {e}"),
    }
}

/// Serve the virtio-serial port `name` forever (waiting for it to appear).
pub fn serial(name: &str, agent: &Agent) -> std::io::Error {
    let path = Path::new("/dev/virtio-ports").join(name);
    loop {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                return std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
            }
        };
        // One host connection per round; a read error means the port itself failed:
        // reopen it.
        loop {
            let w = match f.try_clone() {
                Ok(w) => w,
                Err(e) => return e,
            };
            let r = serve(&f, Box::new(w), &config(true), agent);
            log_end("virtio-serial connection", &r);
            if matches!(r, Err(ServeError::Read(_))) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start [`serial`] on its own thread.
pub fn spawn_serial(name: &str, agent: Arc<Agent>) {
    let name = name.to_string();
    let started = std::thread::Builder::new()
        .name("serial".into())
        .spawn(move || {
            let e = serial(&name, &agent);
            eprintln!("banger-agent: the virtio-serial port failed: {e}");
        });
    if let Err(e) = started {
        eprintln!("banger-agent: cannot start the virtio-serial thread: {e}");
    }
}

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Serve one accepted connection (`reader` and `writer` are its two handles) on its
/// own thread.
pub fn connection(
    reader: impl Read + Send + 'static,
    writer: Box<dyn std::io::Write + Send>,
    agent: Arc<Agent>,
    what: &'static str,
) {
    if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        eprintln!("banger-agent: refusing a {what} connection: {MAX_CONNECTIONS} are open");
        return;
    }
    let started = std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            log_end(what, &serve(reader, writer, &config(false), &*agent));
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = started {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
        eprintln!("banger-agent: cannot start a {what} thread: {e}");
    }
}

/// Serve a unix socket at `path` forever (tests and debugging: shutdown is refused).
pub fn listen_unix(path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {}: {e}", path.display())))?;
    let agent = Arc::new(Agent {
        runs: Runs::OnUnixSocket,
    });
    loop {
        match l.accept() {
            Ok((s, _)) => match s.try_clone() {
                Ok(w) => connection(s, Box::new(w), agent.clone(), "unix"),
                Err(e) => eprintln!("banger-agent: unix connection: cannot clone the stream: {e}"),
            },
            Err(e) => {
                eprintln!("banger-agent: accept on {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// `banger-agent serve`: the virtio-serial port and vsock, under the image's init.
pub fn as_service(port: &str) -> std::io::Error {
    let agent = Arc::new(Agent {
        runs: Runs::AsService,
    });
    crate::vsock::spawn(agent.clone());
    serial(port, &agent)
}
