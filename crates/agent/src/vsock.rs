//! The guest agent over AF_VSOCK.
//!
//! Firecracker guests have no virtio-serial device, only virtio-vsock, so there the
//! agent must listen on a vsock port. Firecracker's host side is a unix socket that
//! forwards a `CONNECT <port>\n` to this listener (see `banger_guest::vsock`); once the
//! guest accepts, the connection carries the agent channel (banger-channel), exactly as
//! the serial port does.
//!
//! QEMU guests keep using the serial port. Listening on vsock there too is harmless:
//! without a vsock device nothing ever connects, and if the kernel has no AF_VSOCK at
//! all we say so once and carry on with the serial port alone.

use crate::handler::Agent;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// The vsock port the agent listens on (the host–guest contract).
pub const AGENT_VSOCK_PORT: u32 = banger_contract::agent::VSOCK_PORT;

/// A listening AF_VSOCK stream socket.
pub struct VsockListener {
    fd: OwnedFd,
}

fn last_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value (and the
    // reserved/zero fields must be zero).
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// A new AF_VSOCK stream socket (close-on-exec, so `poweroff` and other children the
/// agent spawns do not inherit it).
fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err("socket(AF_VSOCK)"));
    }
    // SAFETY: fd is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl VsockListener {
    /// Listen on `port` for any CID (`VMADDR_CID_ANY`). `libc::VMADDR_PORT_ANY` lets the
    /// kernel pick a free port (see [`VsockListener::port`]).
    pub fn bind(port: u32) -> std::io::Result<Self> {
        let fd = socket()?;
        let addr = sockaddr(libc::VMADDR_CID_ANY, port);
        // SAFETY: addr is a valid sockaddr_vm and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_err(&format!("bind vsock port {port}")));
        }
        // SAFETY: listen(2) on a socket we own.
        if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
            return Err(last_err(&format!("listen on vsock port {port}")));
        }
        Ok(Self { fd })
    }

    /// The port actually bound (differs from the request only for `VMADDR_PORT_ANY`,
    /// which only the tests use: the agent always binds [`AGENT_VSOCK_PORT`]).
    #[cfg(test)]
    pub fn port(&self) -> std::io::Result<u32> {
        let mut addr = sockaddr(0, 0);
        let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        // SAFETY: addr/len describe a writable sockaddr_vm buffer.
        let rc = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                std::ptr::addr_of_mut!(addr).cast::<libc::sockaddr>(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(last_err("getsockname on the vsock listener"));
        }
        Ok(addr.svm_port)
    }

    /// Wait for the next connection. The stream is a `File` because a connected socket
    /// needs nothing beyond read(2)/write(2), which `File` provides.
    pub fn accept(&self) -> std::io::Result<File> {
        // SAFETY: accept4(2) on a listening socket we own; peer address not wanted.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(last_err("accept on the vsock listener"));
        }
        // SAFETY: fd is a freshly accepted descriptor nobody else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// Start the vsock listener on [`AGENT_VSOCK_PORT`] in a background thread. When the
/// guest kernel has no AF_VSOCK (or the port is taken) this logs once to stderr and
/// returns: the serial port still serves the host.
pub fn spawn(agent: Arc<Agent>) {
    match VsockListener::bind(AGENT_VSOCK_PORT) {
        Ok(l) => {
            let started = std::thread::Builder::new()
                .name("vsock-accept".into())
                .spawn(move || accept_loop(&l, &agent));
            if let Err(e) = started {
                eprintln!("banger-agent: cannot start the vsock listener thread: {e}; serving the serial port only");
            }
        }
        Err(e) => {
            eprintln!("banger-agent: vsock unavailable ({e}); serving the virtio-serial port only")
        }
    }
}

/// Accept forever, one thread per connection.
fn accept_loop(l: &VsockListener, agent: &Arc<Agent>) {
    loop {
        match l.accept() {
            Ok(stream) => match stream.try_clone() {
                Ok(w) => crate::serve::connection(stream, Box::new(w), agent.clone(), "vsock"),
                Err(e) => eprintln!("banger-agent: vsock connection: cannot clone the stream: {e}"),
            },
            Err(e) => {
                // EINTR, ECONNABORTED, EMFILE, ...: transient for a listener. Back off so
                // a persistent error (EMFILE) does not spin a CPU.
                eprintln!("banger-agent: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Runs;
    use banger_channel::decoder::Decoder;
    use banger_channel::frame::{encode, Kind};
    use banger_channel::limits::PREAMBLE;
    use banger_channel::{Control, Hello, Limits, Role};
    use std::io::{Read, Write};

    /// Connect to `cid:port` (the test's client side).
    fn connect(cid: u32, port: u32) -> Result<File, std::io::Error> {
        let fd = socket()?;
        let addr = sockaddr(cid, port);
        // SAFETY: addr is a valid sockaddr_vm and the length matches it.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_err("connect"));
        }
        Ok(File::from(fd))
    }

    /// Say hello, open `request` as session 1, return the first control message.
    fn ask(mut s: File, request: &[u8]) -> Control {
        let hello = serde_json::to_vec(&Hello::new(Role::Client, "test")).unwrap();
        s.write_all(PREAMBLE).unwrap();
        s.write_all(&encode(0, Kind::Hello, &hello)).unwrap();
        s.write_all(&encode(1, Kind::Open, request)).unwrap();
        let mut d = Decoder::new(Limits::default());
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the agent hung up");
            for f in d.decode_all(&buf[..n]).unwrap() {
                if f.session == 1 && f.kind == Kind::Control {
                    return serde_json::from_slice(&f.payload).unwrap();
                }
            }
        }
    }

    #[test]
    fn answers_over_real_vsock_loopback() {
        // The agent's own port if free here, else any port (the host may run an agent).
        let l = match VsockListener::bind(AGENT_VSOCK_PORT)
            .or_else(|_| VsockListener::bind(libc::VMADDR_PORT_ANY))
        {
            Ok(l) => l,
            Err(e) => {
                println!("skipping: cannot listen on AF_VSOCK here: {e}");
                return;
            }
        };
        let port = l.port().expect("getsockname");
        let agent = Arc::new(Agent {
            runs: Runs::OnUnixSocket,
        });
        std::thread::spawn(move || accept_loop(&l, &agent));
        let conn = |what| match connect(libc::VMADDR_CID_LOCAL, port) {
            Ok(s) => Some(s),
            Err(e) => {
                println!("skipping {what}: no vsock loopback transport ({e})");
                None
            }
        };
        let Some(s) = conn("ping") else { return };
        assert!(matches!(ask(s, br#"{"type":"ping"}"#), Control::Pong(_)));
        let Some(s) = conn("ports") else { return };
        assert!(matches!(
            ask(s, br#"{"type":"ports"}"#),
            Control::Ports { .. }
        ));
    }
}
