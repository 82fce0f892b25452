//! The small requests: ping (is the agent up, which boot), listening ports.

use banger_channel::Pong;

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Seconds since the guest kernel started.
pub fn uptime() -> Option<f64> {
    read_trim("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
}

/// The answer to a ping; `init` says whether the agent is the guest's init.
pub fn pong(init: &str) -> Pong {
    Pong {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: banger_channel::limits::PROTOCOL_VERSION,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        uptime_s: uptime(),
        init: init.to_string(),
    }
}

/// Listening TCP ports from /proc/net/tcp{,6} (state 0A = LISTEN), sorted, unique.
pub fn listening_ports() -> Vec<u16> {
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
    fn a_pong_names_this_boot() {
        let p = pong("service");
        assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(p.init, "service");
        assert!(p.uptime_s.is_some());
    }
}
