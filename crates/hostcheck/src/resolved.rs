//! Whether this host runs systemd-resolved, the one host resolver banger configures
//! itself (per-link DNS on its bridge). The daemon's privileged side decides with
//! this, and `banger doctor` reports the same decision.

use std::path::Path;

/// systemd-resolved's runtime directory; it exists only while resolved runs (or ran
/// since boot).
pub const RUNTIME: &str = "/run/systemd/resolve";
/// resolved's varlink socket, present while it runs.
pub const SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";
/// Debian's resolvectl.
pub const RESOLVECTL: &str = "/usr/bin/resolvectl";

/// Whether resolved runs here and its `resolvectl` exists: then banger gives its
/// bridge per-link DNS (`.vm` → the gateway).
pub fn runs() -> bool {
    Path::new(SOCKET).exists() && Path::new(RESOLVECTL).is_file()
}

/// The line that sends `.vm` to banger's host listener `addr` in a dnsmasq config
/// (dnsmasq itself, or NetworkManager's dnsmasq plugin).
pub fn dnsmasq_line(addr: std::net::SocketAddr) -> String {
    format!("server=/vm/{}#{}", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dnsmasq_syntax() {
        assert_eq!(
            super::dnsmasq_line("127.0.0.1:42069".parse().unwrap()),
            "server=/vm/127.0.0.1#42069"
        );
    }
}
