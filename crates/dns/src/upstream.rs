//! Where forwarded queries go: the host's real resolvers, not its loopback stub.
//!
//! On a host with systemd-resolved, `/etc/resolv.conf` names `127.0.0.53`: guests
//! cannot reach it, and asking it on their behalf would route their lookups through
//! the host's split-DNS rules (and back to banger for `.vm`). resolved keeps the real
//! upstreams in `/run/systemd/resolve/resolv.conf`, so that file is read first. Only
//! when no file names anything but loopback servers (a host whose one resolver is a
//! local dnsmasq or unbound) are those used: the daemon runs on the host and reaches
//! them itself.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// At most this many upstreams are used (glibc's limit too).
const MAX_UPSTREAMS: usize = 3;

/// The largest resolv.conf we read: a real one is a few hundred bytes.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// Nameserver addresses in a resolv.conf text, loopback ones skipped, at most three.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    nameservers(text)
        .filter(|ip| !ip.is_loopback())
        .take(MAX_UPSTREAMS)
        .collect()
}

/// Every usable `nameserver` address of a resolv.conf text, loopback included.
fn nameservers(text: &str) -> impl Iterator<Item = IpAddr> + '_ {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then(|| f.next())?
        })
        // A scoped IPv6 address (fe80::1%eth0) does not parse: it names an interface
        // the forwarder's socket is not bound to.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
}

/// The first of `files` that names a non-loopback upstream wins; when none does, the
/// loopback servers of the first file that has any (see the module docs).
pub fn upstreams_from_files<P: AsRef<Path>>(files: &[P]) -> Vec<SocketAddr> {
    let mut stub: Vec<IpAddr> = vec![];
    for f in files {
        let Some(text) = read_capped(f.as_ref()) else {
            continue;
        };
        let ips = parse_resolv_conf(&text);
        if !ips.is_empty() {
            return ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect();
        }
        if stub.is_empty() {
            stub = nameservers(&text).take(MAX_UPSTREAMS).collect();
        }
    }
    stub.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect()
}

/// A resolv.conf's text, at most [`MAX_RESOLV_CONF`] bytes; None if unreadable.
fn read_capped(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_RESOLV_CONF).read_to_string(&mut text).ok()?;
    Some(text)
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
        // Nothing but a loopback stub anywhere: the stub (the daemon reaches it).
        let got = upstreams_from_files(&[&stub, &d.path().join("missing")]);
        assert_eq!(got, vec!["127.0.0.53:53".parse().unwrap()]);
        assert!(upstreams_from_files::<&Path>(&[]).is_empty());
    }
}
