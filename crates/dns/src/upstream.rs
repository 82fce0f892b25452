//! Where forwarded queries go: the host's real resolvers, never a loopback stub.
//!
//! On a host with systemd-resolved, `/etc/resolv.conf` names `127.0.0.53`, which a
//! guest cannot reach and which would loop back into the host's own stub anyway;
//! resolved keeps the real upstreams in `/run/systemd/resolve/resolv.conf`, so that
//! file is read first.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// At most this many upstreams are used (glibc's limit too).
const MAX_UPSTREAMS: usize = 3;

/// The largest resolv.conf we read: a real one is a few hundred bytes.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// Nameserver addresses in a resolv.conf text, loopback ones skipped, at most three.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then(|| f.next())?
        })
        // A scoped IPv6 address (fe80::1%eth0) names a host interface a guest lacks.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .take(MAX_UPSTREAMS)
        .collect()
}

/// The first of `files` that names a usable upstream wins.
pub fn upstreams_from_files(files: &[&Path]) -> Vec<SocketAddr> {
    use std::io::Read;
    for f in files {
        let Ok(file) = std::fs::File::open(f) else {
            continue;
        };
        let mut text = String::new();
        if file
            .take(MAX_RESOLV_CONF)
            .read_to_string(&mut text)
            .is_err()
        {
            continue;
        }
        let ips = parse_resolv_conf(&text);
        if !ips.is_empty() {
            return ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect();
        }
    }
    vec![]
}

/// The host's upstream resolvers: systemd-resolved's list, else `/etc/resolv.conf`.
pub fn system_upstreams() -> Vec<SocketAddr> {
    upstreams_from_files(&[
        Path::new("/run/systemd/resolve/resolv.conf"),
        Path::new("/etc/resolv.conf"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_stubs_are_skipped() {
        let t = "# resolved stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        assert!(parse_resolv_conf(t).is_empty());
        let t = "nameserver 192.0.2.1\nnameserver ::1\nnameserver 2001:db8::1\nnameserver junk\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_first_file_with_a_real_upstream_wins() {
        let d = tempfile::tempdir().unwrap();
        let stub = d.path().join("stub");
        let real = d.path().join("real");
        std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&real, "nameserver 198.18.0.1\n").unwrap();
        let got = upstreams_from_files(&[&d.path().join("missing"), &stub, &real]);
        assert_eq!(got, vec!["198.18.0.1:53".parse().unwrap()]);
    }
}
