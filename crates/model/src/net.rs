//! Guest addressing: one IPv4 subnet, the host (bridge) takes `.1`, guests get the
//! lowest free address above it. The MAC encodes the IP so a tap, a MAC and an IP
//! can always be matched up from any one of them when debugging.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Why a subnet or address was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    /// Not of the form a.b.c.d/N.
    #[error("subnet {0:?} is not of the form a.b.c.d/N (example: 172.30.0.0/24)")]
    Malformed(String),
    /// The prefix leaves too few or too many host addresses.
    #[error("subnet {0:?} must have a prefix between /16 and /29")]
    BadPrefix(String),
    /// Every guest address is taken.
    #[error("no free guest address left in {0}; delete unused VMs (banger vm list) or configure a larger subnet")]
    Exhausted(String),
}

/// An IPv4 subnet for guests, e.g. 172.30.0.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Default for Subnet {
    fn default() -> Self {
        Self {
            network: Ipv4Addr::new(172, 30, 0, 0),
            prefix: 24,
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| NetError::Malformed(s.into()))?;
        let ip: Ipv4Addr = a.parse().map_err(|_| NetError::Malformed(s.into()))?;
        let prefix: u8 = p.parse().map_err(|_| NetError::Malformed(s.into()))?;
        if !(16..=29).contains(&prefix) {
            return Err(NetError::BadPrefix(s.into()));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The last usable address (the one before the broadcast address).
    pub fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.network) | !self.mask()) - 1)
    }

    /// The host side (bridge) address: the first usable one.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `ip` is a usable guest address in this subnet.
    pub fn is_guest_addr(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(self.network);
        let x = u32::from(ip);
        let broadcast = n | !self.mask();
        x & self.mask() == n && x > n + 1 && x < broadcast
    }

    /// The lowest guest address not in `taken`.
    pub fn allocate(&self, taken: &[Ipv4Addr]) -> Result<Ipv4Addr, NetError> {
        let n = u32::from(self.network);
        let broadcast = n | !self.mask();
        (n + 2..broadcast)
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NetError::Exhausted(self.to_string()))
    }
}

/// Everything the guest needs to configure eth0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    /// Guest address.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// Default gateway (the bridge).
    pub gateway: Ipv4Addr,
}

impl GuestNet {
    /// The guest's MAC: locally administered prefix 06:ba followed by the IPv4 octets.
    pub fn mac(&self) -> String {
        guest_mac(self.ip)
    }
}

/// The MAC of the guest at `ip`: locally administered prefix 06:ba followed by the
/// IPv4 octets. One rule for the VMM's NIC and the host's isolation rules.
pub fn guest_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("06:ba:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let s: Subnet = "172.30.0.77/24".parse().unwrap();
        assert_eq!(s.network, Ipv4Addr::new(172, 30, 0, 0));
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(s.last_host(), Ipv4Addr::new(172, 30, 0, 254));
        let small: Subnet = "10.9.0.0/29".parse().unwrap();
        assert_eq!(small.last_host(), Ipv4Addr::new(10, 9, 0, 6));
        assert!("172.30.0.0".parse::<Subnet>().is_err());
        assert!("172.30.0.0/8".parse::<Subnet>().is_err());
        assert!("x/24".parse::<Subnet>().is_err());
    }

    #[test]
    fn allocates_lowest_free_and_exhausts() {
        let s: Subnet = "10.9.0.0/29".parse().unwrap();
        let mut taken = vec![];
        for want in 2..=6 {
            let ip = s.allocate(&taken).unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 9, 0, want));
            assert!(s.is_guest_addr(ip));
            taken.push(ip);
        }
        assert!(matches!(s.allocate(&taken), Err(NetError::Exhausted(_))));
        taken.remove(1);
        assert_eq!(s.allocate(&taken).unwrap(), Ipv4Addr::new(10, 9, 0, 3));
    }

    #[test]
    fn mac_encodes_ip() {
        let g = GuestNet {
            ip: Ipv4Addr::new(172, 30, 0, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(172, 30, 0, 1),
        };
        assert_eq!(g.mac(), "06:ba:ac:1e:00:02");
    }
}
