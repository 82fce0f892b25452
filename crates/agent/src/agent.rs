//! The guest agent: a line-oriented JSON responder on a virtio-serial port.
//!
//! The host side is a unix socket owned by the VMM (QEMU's chardev), so the daemon can
//! ask "is the guest up?" without the network or ssh. Requests are one JSON object a
//! line, `{"op":"ping"}` or `{"op":"ports"}`; every reply is one JSON object a line.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// The virtio-serial port name banger's VMM backends create.
pub const DEFAULT_PORT: &str = banger_contract::agent::VIRTIO_PORT;

/// Serve requests forever on `/dev/virtio-ports/<port>`.
/// Also starts the AF_VSOCK listener (Firecracker guests have no virtio-serial).
pub fn serve(port: &str) -> std::io::Result<()> {
    crate::vsock::spawn();
    let path = std::path::Path::new("/dev/virtio-ports").join(port);
    loop {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        let mut w = f.try_clone()?;
        let mut r = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            // A virtio port reads EOF while no host is connected: back off and retry.
            match r.read_line(&mut line) {
                Ok(0) => std::thread::sleep(Duration::from_millis(50)),
                Ok(_) => {
                    let reply = handle(line.trim());
                    let mut out = reply.to_string();
                    out.push('\n');
                    if w.write_all(out.as_bytes()).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Answer one request line; shared by the serial port and [`crate::vsock`].
pub(crate) fn handle(line: &str) -> Value {
    if line.is_empty() {
        return json!({"ok": false, "error": "empty request"});
    }
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"ok": false, "error": format!("malformed request: {e}")}),
    };
    match req.get("op").and_then(Value::as_str) {
        Some("ping") => json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
            "boot_id": read_trim("/proc/sys/kernel/random/boot_id"),
            "uptime_s": read_trim("/proc/uptime").split_whitespace().next().and_then(|s| s.parse::<f64>().ok()),
        }),
        Some("ports") => json!({"ok": true, "ports": listening_ports()}),
        Some("shutdown") => shutdown(),
        Some(other) => json!({"ok": false, "error": format!("unknown op {other:?}")}),
        None => json!({"ok": false, "error": "request has no \"op\""}),
    }
}

/// Flush every filesystem, then ask systemd for a clean poweroff (it unmounts /root
/// and the overlay). The reply goes out before the guest goes down; the host watches
/// the VMM exit. Falls back to the kernel's poweroff if there is no systemctl.
fn shutdown() -> Value {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let spawned = std::process::Command::new("systemctl")
        .args(["poweroff", "--no-block"])
        .spawn()
        .or_else(|_| std::process::Command::new("poweroff").spawn());
    match spawned {
        Ok(_) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": format!("cannot start poweroff: {e}")}),
    }
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Listening TCP ports from /proc/net/tcp{,6} (state 0A = LISTEN), sorted, unique.
fn listening_ports() -> Vec<u16> {
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|p| parse_proc_net_tcp(&std::fs::read_to_string(p).unwrap_or_default()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn parse_proc_net_tcp(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_only() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert_eq!(parse_proc_net_tcp(t), vec![22]);
    }

    #[test]
    fn answers_ping_and_refuses_garbage() {
        assert_eq!(handle(r#"{"op":"ping"}"#)["ok"], true);
        assert_eq!(handle("nope")["ok"], false);
        assert_eq!(handle(r#"{"op":"dance"}"#)["ok"], false);
    }
}
