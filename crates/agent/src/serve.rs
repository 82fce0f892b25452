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
use banger_channel::sync::{serve, serve_port, ServeError, ServerConfig};
use banger_channel::Limits;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The virtio-serial port name banger's VMM backends create.
pub const DEFAULT_PORT: &str = banger_contract::agent::VIRTIO_PORT;

/// Connections served at once on the listeners (vsock, unix); more are closed at once.
const MAX_CONNECTIONS: usize = 16;

fn config() -> ServerConfig {
    ServerConfig {
        software: format!("banger-agent {}", env!("CARGO_PKG_VERSION")),
        limits: Limits::default(),
    }
}

fn log_end(what: &str, r: &Result<(), ServeError>) {
    match r {
        Ok(()) | Err(ServeError::Goaway(_)) => {}
        Err(e) => eprintln!("banger-agent: {what}: {e}"),
    }
}

/// The device of the virtio-serial port `name`. udev makes the
/// `/dev/virtio-ports/<name>` link; without udev (the agent as init) the name is in
/// sysfs and devtmpfs has the device as `/dev/vportNpM`.
fn find_port(name: &str) -> Option<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(name);
    if link.exists() {
        return Some(link);
    }
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name))
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| p.exists())
}

/// Serve the virtio-serial port `name` forever (waiting for it to appear).
pub fn serial(name: &str, agent: &Agent) -> std::io::Error {
    loop {
        let Some(path) = find_port(name) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
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
        announce_restart(&f);
        // Host connections come and go on the port; a read error means the port
        // itself failed: reopen it.
        let e = serve_port(
            &f,
            || Ok(Box::new(PortWriter(f.try_clone()?)) as Box<dyn std::io::Write + Send>),
            &config(),
            agent,
            |r| {
                match r {
                Err(ServeError::Frame(e)) => eprintln!(
                    "banger-agent: virtio-serial: a new host connection began mid-stream ({e}); resynchronised"
                ),
                r => log_end("virtio-serial connection", r),
            }
            },
        );
        eprintln!("banger-agent: the virtio-serial port failed ({e}); reopening it");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A host still connected to the port when the agent (re)opens it was talking to a
/// previous agent (the service restarted): tell it with a goaway frame, so it
/// reconnects instead of waiting for answers this agent will never give. A host still
/// in its handshake skips the frame as junk before the preamble.
fn announce_restart(f: &std::fs::File) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n <= 0 || p.revents & libc::POLLHUP != 0 || p.revents & libc::POLLOUT == 0 {
        return;
    }
    let msg = serde_json::json!({"message": "the guest agent restarted"}).to_string();
    let frame = banger_channel::frame::encode(0, banger_channel::Kind::Goaway, msg.as_bytes());
    if let Ok(w) = f.try_clone() {
        let _ = PortWriter(w).write_all(&frame);
    }
}

/// How long a write waits for a connected host to take the port's data.
const PORT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits for a host to be connected. The guest learns of a new host
/// connection on a control queue, separately from its data: the first bytes of a new
/// host can be read before the port says a host is connected, so "no host" is only
/// believed after this long.
const PORT_HOST_GRACE: Duration = Duration::from_secs(2);

/// Writes to the virtio-serial port that fail instead of blocking forever when no host
/// is connected. A port write blocks until a host connects, so without this a worker
/// of a connection whose host left would stall (and later write stale frames into the
/// next host's connection), and a shutdown reply could keep the power-off from running.
struct PortWriter(std::fs::File);

impl std::io::Write for PortWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let start = std::time::Instant::now();
        loop {
            let mut p = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, PORT_WRITE_TIMEOUT.as_millis() as libc::c_int) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if p.revents & libc::POLLOUT != 0 {
                return self.0.write(buf);
            }
            if p.revents & libc::POLLHUP == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the host did not read the virtio-serial port for {}s",
                        PORT_WRITE_TIMEOUT.as_secs()
                    ),
                ));
            }
            if start.elapsed() >= PORT_HOST_GRACE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the host disconnected from the virtio-serial port",
                ));
            }
            // POLLHUP returns at once: wait a little for the host to show up.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
            log_end(what, &serve(reader, writer, &config(), &*agent));
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
