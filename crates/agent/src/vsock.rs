//! The guest agent over AF_VSOCK.
//!
//! Firecracker guests have no virtio-serial device, only virtio-vsock, so there the
//! agent must listen on a vsock port. Firecracker's host side is a unix socket that
//! forwards a `CONNECT <port>\n` to this listener (see `banger_guest::vsock`); once the
//! guest accepts, the connection carries the same protocol as the serial port: one JSON
//! request a line in, one JSON reply a line out, answered by [`crate::agent::handle`].
//!
//! QEMU guests keep using the serial port. Listening on vsock there too is harmless:
//! without a vsock device nothing ever connects, and if the kernel has no AF_VSOCK at
//! all we say so once and carry on with the serial port alone.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The vsock port the agent listens on (the host–guest contract).
pub const AGENT_VSOCK_PORT: u32 = banger_contract::agent::VSOCK_PORT;

/// Longest request line accepted. Agent requests are a few dozen bytes; the cap only
/// keeps a confused peer from making the guest buffer an unbounded line.
const MAX_LINE: u64 = 64 * 1024;

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
pub fn spawn() {
    match VsockListener::bind(AGENT_VSOCK_PORT) {
        Ok(l) => {
            let started = std::thread::Builder::new()
                .name("vsock-accept".into())
                .spawn(move || accept_loop(&l));
            if let Err(e) = started {
                eprintln!("banger-agent: cannot start the vsock listener thread: {e}; serving the serial port only");
            }
        }
        Err(e) => {
            eprintln!("banger-agent: vsock unavailable ({e}); serving the virtio-serial port only")
        }
    }
}

/// Accept forever, one thread per connection (the host opens few, short-lived ones).
fn accept_loop(l: &VsockListener) {
    loop {
        match l.accept() {
            Ok(stream) => {
                let spawned =
                    std::thread::Builder::new()
                        .name("vsock-conn".into())
                        .spawn(move || {
                            let w = match stream.try_clone() {
                                Ok(w) => w,
                                Err(e) => {
                                    eprintln!(
                                    "banger-agent: vsock connection: cannot clone the stream: {e}"
                                );
                                    return;
                                }
                            };
                            // A broken connection only ends that connection.
                            let _ = serve_lines(stream, w);
                        });
                if let Err(e) = spawned {
                    eprintln!("banger-agent: cannot start a vsock connection thread: {e}");
                }
            }
            Err(e) => {
                // EINTR, ECONNABORTED, EMFILE, ...: transient for a listener. Back off so
                // a persistent error (EMFILE) does not spin a CPU.
                eprintln!("banger-agent: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Answer one connection: each line read from `r` gets one JSON reply line on `w`,
/// until EOF. A line longer than [`MAX_LINE`] gets an error reply and ends the
/// connection (the rest of it cannot be framed reliably).
pub(crate) fn serve_lines<R: Read, W: Write>(r: R, mut w: W) -> std::io::Result<()> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let too_long = n as u64 == MAX_LINE && !line.ends_with('\n');
        let reply = if too_long {
            serde_json::json!({"ok": false, "error": format!("request longer than {MAX_LINE} bytes")})
        } else {
            crate::agent::handle(line.trim())
        };
        let mut out = reply.to_string();
        out.push('\n');
        w.write_all(out.as_bytes())?;
        w.flush()?;
        if too_long {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::os::unix::net::UnixStream;

    fn read_reply(r: &mut BufReader<UnixStream>) -> Value {
        let mut l = String::new();
        r.read_line(&mut l).expect("read reply");
        serde_json::from_str(&l).expect("reply is JSON")
    }

    #[test]
    fn lines_in_lines_out_over_a_stream() {
        let (host, guest) = UnixStream::pair().expect("socketpair");
        let gw = guest.try_clone().expect("clone");
        let t = std::thread::spawn(move || serve_lines(guest, gw));
        let mut w = host.try_clone().expect("clone");
        let mut r = BufReader::new(host);

        w.write_all(b"{\"op\":\"ping\"}\n").expect("write");
        let ping = read_reply(&mut r);
        assert_eq!(ping["ok"], true);
        assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));

        // Two requests in one write: two replies, in order.
        w.write_all(b"{\"op\":\"dance\"}\ngarbage\n")
            .expect("write");
        let a = read_reply(&mut r);
        assert_eq!(a["ok"], false);
        assert!(a["error"].as_str().unwrap_or("").contains("dance"), "{a}");
        let b = read_reply(&mut r);
        assert!(
            b["error"].as_str().unwrap_or("").contains("malformed"),
            "{b}"
        );

        // EOF from the host ends the connection cleanly.
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        t.join()
            .expect("join")
            .expect("serve_lines ends without error");
    }

    #[test]
    fn an_endless_line_is_refused_and_closes() {
        let (host, guest) = UnixStream::pair().expect("socketpair");
        let gw = guest.try_clone().expect("clone");
        let t = std::thread::spawn(move || serve_lines(guest, gw));
        let mut w = host.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            // The server stops reading after MAX_LINE; ignore the resulting EPIPE.
            let _ = w.write_all(&vec![b'x'; MAX_LINE as usize + 10]);
        });
        let mut r = BufReader::new(host);
        let reply = read_reply(&mut r);
        assert!(
            reply["error"].as_str().unwrap_or("").contains("longer"),
            "{reply}"
        );
        t.join().expect("join").expect("serve_lines returns Ok");
        writer.join().expect("writer");
    }

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
        std::thread::spawn(move || accept_loop(&l));
        let stream = match connect(libc::VMADDR_CID_LOCAL, port) {
            Ok(s) => s,
            Err(e) => {
                println!("skipping: no vsock loopback transport ({e})");
                return;
            }
        };
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        w.write_all(b"{\"op\":\"ping\"}\n").expect("write");
        let mut l = String::new();
        r.read_line(&mut l).expect("read");
        let v: Value = serde_json::from_str(&l).expect("JSON reply");
        assert_eq!(v["ok"], true, "{v}");
        w.write_all(b"{\"op\":\"ports\"}\n").expect("write");
        l.clear();
        r.read_line(&mut l).expect("read");
        let v: Value = serde_json::from_str(&l).expect("JSON reply");
        assert!(v["ports"].is_array(), "{v}");
    }
}
