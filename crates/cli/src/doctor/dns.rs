//! `<vm>.vm` names on this host: what makes them resolve outside banger.

use super::{Check, Status};
use banger_hostcheck::resolved;

/// The host listener's address as the daemon will read it (`BANGER_DNS`).
fn host_listener() -> Option<std::net::SocketAddr> {
    match std::env::var("BANGER_DNS").ok().filter(|v| !v.is_empty()) {
        None => "127.0.0.1:42069".parse().ok(),
        Some(v) if v == "off" || v == "0" => None,
        Some(v) => v.parse().ok(),
    }
}

/// systemd-resolved (banger configures it), else the line for dnsmasq.
pub fn check() -> Check {
    const NAME: &str = "vm names";
    if resolved::runs() {
        return Check::new(
            NAME,
            Status::Ok,
            "systemd-resolved runs: banger routes .vm to its bridge (resolvectl domain banger0 ~vm), so `ping NAME.vm` works in every program",
        );
    }
    let Some(addr) = host_listener() else {
        return Check::new(
            NAME,
            Status::Info,
            "BANGER_DNS=off: no host listener; `banger ssh-config install` still makes `ssh NAME.vm` work",
        );
    };
    Check::new(
        NAME,
        Status::Info,
        format!(
            "no systemd-resolved: NAME.vm resolves at {addr} (dig @{} -p {} NAME.vm) and in ssh after `banger ssh-config install`; other programs need your resolver to ask banger",
            addr.ip(),
            addr.port()
        ),
    )
    .fix(format!(
        "dnsmasq or NetworkManager with dnsmasq: add `{}` to /etc/dnsmasq.d/banger.conf (or /etc/NetworkManager/dnsmasq.d/banger.conf) and restart it",
        resolved::dnsmasq_line(addr)
    ))
}
