//! Guest isolation: what a guest may send, and what of the host it may reach.
//!
//! Two tables, both banger's own, so `nft list ruleset` shows exactly what banger
//! added and removing them removes nothing else:
//!
//! * `bridge banger` (layer 2, before the bridge forwards anything): every frame a
//!   guest sends through its tap must carry that VM's MAC, and its IPv4 and ARP
//!   packets that VM's address. A guest therefore cannot answer ARP for another VM or
//!   for the gateway, cannot send as them, and cannot poison the bridge's forwarding
//!   table, so it never receives another VM's traffic (or its workspace). Each tap
//!   gets its own chain, reached through a verdict map keyed by interface name; a
//!   `bgr*` tap that has no entry sends nothing at all.
//! * `inet banger_guard` (layer 3, towards the host): a guest reaches the host only
//!   at banger's DNS responder on the gateway address (UDP and TCP 53), with ping, and
//!   on the TCP ports the user opted into; replies to connections the host opened are
//!   let through. Nobody on the bridge reaches link-local addresses (the cloud
//!   metadata service at 169.254.169.254 lives there). Guest-to-guest and
//!   guest-to-internet traffic (NAT) is not affected.
//!
//! Guests are IPv4 only: IPv6 frames from a guest are dropped, which also rules out
//! neighbour-discovery spoofing.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::nat::{nft_program, run_nft, NatError};
use crate::validate_ifname;

/// The layer-2 table (family `bridge`).
pub const BRIDGE_TABLE: &str = "banger";
/// The layer-3 table towards the host (family `inet`).
pub const GUARD_TABLE: &str = "banger_guard";

/// Why an isolation rule could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// An interface name cannot be used in a rule.
    #[error("interface name is unusable in a rule: {0}")]
    BadName(#[source] crate::NetError),
    /// The MAC address is not six colon-separated hex octets.
    #[error("{0:?} is not a MAC address (six colon-separated hex octets)")]
    BadMac(String),
    /// nft failed (missing, or refused the rules).
    #[error(transparent)]
    Nft(#[from] NatError),
}

fn check_mac(mac: &str) -> Result<(), IsolationError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(IsolationError::BadMac(mac.to_string()))
    }
}

fn tap_chain(tap: &str) -> String {
    format!("tap-{tap}")
}

/// The transaction that (re)creates the host guard and makes sure the layer-2 table
/// exists. Idempotent; per-tap chains already in the layer-2 table are kept.
pub fn guard_ruleset(
    bridge: &str,
    gateway: Ipv4Addr,
    host_tcp_ports: &[u16],
) -> Result<String, IsolationError> {
    validate_ifname(bridge).map_err(IsolationError::BadName)?;
    let ports = if host_tcp_ports.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = host_tcp_ports.iter().map(u16::to_string).collect();
        format!(
            "\t\tiifname \"{bridge}\" ip daddr {gateway} tcp dport {{ {} }} accept\n",
            list.join(", ")
        )
    };
    Ok(format!(
        "add table inet {GUARD_TABLE}\n\
         delete table inet {GUARD_TABLE}\n\
         table inet {GUARD_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ct state established,related accept\n\
         \t\tiifname \"{bridge}\" ip daddr {gateway} udp dport 53 accept\n\
         \t\tiifname \"{bridge}\" ip daddr {gateway} tcp dport 53 accept\n\
         \t\tiifname \"{bridge}\" icmp type echo-request accept\n\
         {ports}\
         \t\tiifname \"{bridge}\" drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ip daddr 169.254.0.0/16 drop\n\
         \t}}\n\
         }}\n\
         {}",
        bridge_table_base()
    ))
}

/// The layer-2 table, its tap map and its entry chain (idempotent: `add` keeps what
/// exists, the entry chain is flushed and refilled).
fn bridge_table_base() -> String {
    format!(
        "add table bridge {BRIDGE_TABLE}\n\
         add map bridge {BRIDGE_TABLE} taps {{ type ifname : verdict; }}\n\
         add chain bridge {BRIDGE_TABLE} prerouting {{ type filter hook prerouting priority -200; policy accept; }}\n\
         flush chain bridge {BRIDGE_TABLE} prerouting\n\
         add rule bridge {BRIDGE_TABLE} prerouting iifname vmap @taps\n\
         add rule bridge {BRIDGE_TABLE} prerouting iifname \"bgr*\" drop\n"
    )
}

/// The transaction that lets `tap` send only as (`mac`, `ip`). Idempotent.
pub fn tap_ruleset(tap: &str, mac: &str, ip: Ipv4Addr) -> Result<String, IsolationError> {
    validate_ifname(tap).map_err(IsolationError::BadName)?;
    check_mac(mac)?;
    let c = tap_chain(tap);
    let t = BRIDGE_TABLE;
    Ok(format!(
        "add table bridge {t}\n\
         add map bridge {t} taps {{ type ifname : verdict; }}\n\
         add chain bridge {t} {c}\n\
         flush chain bridge {t} {c}\n\
         add rule bridge {t} {c} ether saddr != {mac} drop\n\
         add rule bridge {t} {c} ether type arp arp saddr ether != {mac} drop\n\
         add rule bridge {t} {c} ether type arp arp saddr ip != {ip} drop\n\
         add rule bridge {t} {c} ether type ip ip saddr != {ip} drop\n\
         add rule bridge {t} {c} ether type {{ ip, arp }} accept\n\
         add rule bridge {t} {c} drop\n\
         add element bridge {t} taps {{ \"{tap}\" : goto {c} }}\n"
    ))
}

/// The transaction that removes `tap`'s rules. Idempotent (adds, then deletes, in
/// one transaction, so a missing chain is not an error).
pub fn untap_ruleset(tap: &str) -> Result<String, IsolationError> {
    validate_ifname(tap).map_err(IsolationError::BadName)?;
    let c = tap_chain(tap);
    let t = BRIDGE_TABLE;
    Ok(format!(
        "add table bridge {t}\n\
         add map bridge {t} taps {{ type ifname : verdict; }}\n\
         add chain bridge {t} {c}\n\
         add element bridge {t} taps {{ \"{tap}\" : goto {c} }}\n\
         delete element bridge {t} taps {{ \"{tap}\" }}\n\
         delete chain bridge {t} {c}\n"
    ))
}

/// The nft banger runs when the caller names none: Debian's path when present, else
/// whatever `PATH` finds (the root helper always passes an absolute path instead).
pub fn default_nft() -> &'static Path {
    Path::new(nft_program())
}

/// Install (or refresh) the host guard for `bridge` (see the module docs), with the
/// `nft` at `nft`.
pub async fn enable_guard(
    nft: &Path,
    bridge: &str,
    gateway: Ipv4Addr,
    host_tcp_ports: &[u16],
) -> Result<(), IsolationError> {
    run_nft(nft, &guard_ruleset(bridge, gateway, host_tcp_ports)?).await?;
    Ok(())
}

/// Let `tap` send only as its VM (`mac`, `ip`).
pub async fn isolate_tap(
    nft: &Path,
    tap: &str,
    mac: &str,
    ip: Ipv4Addr,
) -> Result<(), IsolationError> {
    run_nft(nft, &tap_ruleset(tap, mac, ip)?).await?;
    Ok(())
}

/// Remove `tap`'s rules (absent is fine).
pub async fn release_tap(nft: &Path, tap: &str) -> Result<(), IsolationError> {
    run_nft(nft, &untap_ruleset(tap)?).await?;
    Ok(())
}

/// Remove both isolation tables (absent is fine).
pub async fn disable_guard(nft: &Path) -> Result<(), IsolationError> {
    run_nft(
        nft,
        &format!(
            "add table inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\n\
         add table bridge {BRIDGE_TABLE}\ndelete table bridge {BRIDGE_TABLE}\n"
        ),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_rules_pin_mac_and_ip() {
        let r = tap_ruleset("bgr1a2b", "06:ba:ac:1e:00:02", Ipv4Addr::new(172, 30, 0, 2)).unwrap();
        assert!(r.contains("ether saddr != 06:ba:ac:1e:00:02 drop"));
        assert!(r.contains("arp saddr ip != 172.30.0.2 drop"));
        assert!(r.contains("ip saddr != 172.30.0.2 drop"));
        assert!(r.contains("taps { \"bgr1a2b\" : goto tap-bgr1a2b }"));
        assert!(r.trim_end().ends_with('}'));
    }

    #[test]
    fn bad_names_and_macs_are_refused() {
        assert!(matches!(
            tap_ruleset("bgr\"x", "06:ba:ac:1e:00:02", Ipv4Addr::LOCALHOST),
            Err(IsolationError::BadName(_))
        ));
        for mac in [
            "06:ba:ac:1e:00",
            "06:ba:ac:1e:00:zz",
            "06:ba:ac:1e:00:02 drop",
        ] {
            assert!(matches!(
                tap_ruleset("bgr1", mac, Ipv4Addr::LOCALHOST),
                Err(IsolationError::BadMac(_))
            ));
        }
    }

    #[test]
    fn guard_allows_dns_ping_and_chosen_ports_only() {
        let r = guard_ruleset("banger0", Ipv4Addr::new(172, 30, 0, 1), &[8080, 5432]).unwrap();
        assert!(r.contains("ip daddr 172.30.0.1 udp dport 53 accept"));
        assert!(r.contains("tcp dport { 8080, 5432 } accept"));
        assert!(r.contains("iifname \"banger0\" drop"));
        assert!(r.contains("ip daddr 169.254.0.0/16 drop"));
        let r = guard_ruleset("banger0", Ipv4Addr::new(172, 30, 0, 1), &[]).unwrap();
        assert!(!r.contains("tcp dport {"));
    }
}
