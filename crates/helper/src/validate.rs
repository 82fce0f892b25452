//! The rules every privileged request must pass. Written out by hand (no regex crate)
//! because they are few and must be obviously right.

use std::net::Ipv4Addr;

use crate::HelperError;

/// The RFC 1918 blocks: (network, prefix).
const PRIVATE_BLOCKS: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// The only subnet sizes banger uses: big enough for a few guests, small enough not
/// to swallow a whole private block someone else routes.
pub(crate) const PREFIXES: std::ops::RangeInclusive<u8> = 16..=29;

/// The kernel's overflow uid (`nobody`): what an unmapped uid turns into, so a tap
/// owned by it means the caller's uid mapping went wrong.
const OVERFLOW_UID: u32 = 65534;

pub(crate) fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// `^[a-z][a-z0-9-]{0,14}$`
pub(crate) fn bridge_name(name: &str) -> Result<(), HelperError> {
    let b = name.as_bytes();
    let ok = (1..=15).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(HelperError::BadBridgeName(name.to_string()))
    }
}

/// `^bgr[0-9a-f]{1,12}$`: only taps banger named itself (see `banger_host::tap_name`).
pub(crate) fn tap_name(name: &str) -> Result<(), HelperError> {
    let ok = name.strip_prefix("bgr").is_some_and(|hex| {
        (1..=12).contains(&hex.len())
            && hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(HelperError::BadTapName(name.to_string()))
    }
}

pub(crate) fn prefix(prefix: u8) -> Result<(), HelperError> {
    if PREFIXES.contains(&prefix) {
        Ok(())
    } else {
        Err(HelperError::BadPrefix(prefix))
    }
}

/// Whether the whole of `network/prefix` lies inside one RFC 1918 block.
fn in_private_block(addr: Ipv4Addr, prefix: u8) -> bool {
    PRIVATE_BLOCKS
        .iter()
        .any(|(net, len)| prefix >= *len && u32::from(addr) & mask(*len) == u32::from(*net))
}

/// `addr/prefix` (prefix already checked) must lie in private space; `what` names
/// the field in the error.
pub(crate) fn private(what: &'static str, addr: Ipv4Addr, prefix: u8) -> Result<(), HelperError> {
    if in_private_block(addr, prefix) {
        Ok(())
    } else {
        Err(HelperError::NotPrivate { what, addr })
    }
}

/// The gateway must be a host address of its subnet, not its network or broadcast.
pub(crate) fn host_address(addr: Ipv4Addr, prefix: u8) -> Result<(), HelperError> {
    let m = mask(prefix);
    let host = u32::from(addr) & !m;
    if host == 0 || host == !m {
        Err(HelperError::NotHostAddress(addr, prefix))
    } else {
        Ok(())
    }
}

/// A bridge and its gateway: a banger-shaped name, a /16../29 prefix, and a private
/// host address of that subnet (every request that names the bridge checks the same).
pub(crate) fn bridge(name: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<(), HelperError> {
    bridge_name(name)?;
    prefix(prefix_len)?;
    private("gateway", gateway, prefix_len)?;
    host_address(gateway, prefix_len)
}

/// A guest subnet banger may use: a /16../29 network address inside one RFC 1918 block.
pub(crate) fn subnet(s: &banger_model::Subnet) -> Result<(), HelperError> {
    prefix(s.prefix)?;
    // Subnet's Deserialize does not normalise, so a request could carry host bits;
    // refuse rather than guess what was meant.
    if u32::from(s.network) & !mask(s.prefix) != 0 {
        return Err(HelperError::HostBitsSet(*s));
    }
    private("subnet", s.network, s.prefix)
}

/// Host ports guests may reach: at most [`crate::op::MAX_HOST_PORTS`], none zero.
pub(crate) fn host_ports(ports: &[u16]) -> Result<(), HelperError> {
    if ports.len() > crate::op::MAX_HOST_PORTS || ports.contains(&0) {
        let list: Vec<String> = ports.iter().take(8).map(u16::to_string).collect();
        return Err(HelperError::BadPorts(format!(
            "{}{}",
            list.join(","),
            if ports.len() > 8 { ",..." } else { "" }
        )));
    }
    Ok(())
}

/// An absolute path made only of normal components (no `.`, `..`).
pub(crate) fn plain_absolute(p: &std::path::Path) -> bool {
    use std::path::Component;
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// A uid a tap may be given: not (uid_t)-1 or other values that are really negative
/// numbers cast by a buggy caller, and not the overflow uid.
pub(crate) fn owner_uid(uid: u32) -> Result<(), HelperError> {
    if uid > i32::MAX as u32 || uid == OVERFLOW_UID {
        Err(HelperError::BadOwnerUid(uid))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names() {
        for good in ["banger0", "b", "br-test", "abcdefghijklmno"] {
            assert!(bridge_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "0br",
            "Banger0",
            "br_0",
            "br.0",
            "abcdefghijklmnop",
            "br 0",
            "-br",
            "eth0\n",
        ] {
            assert!(
                matches!(bridge_name(bad), Err(HelperError::BadBridgeName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tap_names() {
        for good in ["bgr0", "bgr0123456789ab", "bgrdeadbeef"] {
            assert!(tap_name(good).is_ok(), "{good}");
        }
        for bad in [
            "bgr",
            "bgr0123456789abc",
            "bgrDEAD",
            "bgr-1",
            "bgrxyz",
            "eth0",
            "banger0",
            "tap0",
            "xbgr1",
            "",
        ] {
            assert!(
                matches!(tap_name(bad), Err(HelperError::BadTapName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn private_ranges_and_edges() {
        assert!(private("x", Ipv4Addr::new(10, 255, 0, 1), 16).is_ok());
        assert!(private("x", Ipv4Addr::new(172, 16, 0, 1), 24).is_ok());
        assert!(private("x", Ipv4Addr::new(172, 31, 255, 1), 24).is_ok());
        assert!(private("x", Ipv4Addr::new(192, 168, 7, 1), 24).is_ok());
        for addr in [
            Ipv4Addr::new(172, 15, 255, 1),
            Ipv4Addr::new(172, 32, 0, 1),
            Ipv4Addr::new(100, 64, 0, 1),
            Ipv4Addr::new(192, 169, 0, 1),
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(169, 254, 0, 1),
        ] {
            assert!(
                matches!(
                    private("gateway", addr, 24),
                    Err(HelperError::NotPrivate {
                        what: "gateway",
                        ..
                    })
                ),
                "{addr}"
            );
        }
    }

    #[test]
    fn prefixes_and_host_addresses() {
        assert!(prefix(16).is_ok() && prefix(29).is_ok());
        assert!(matches!(prefix(15), Err(HelperError::BadPrefix(15))));
        assert!(matches!(prefix(30), Err(HelperError::BadPrefix(30))));
        assert!(host_address(Ipv4Addr::new(172, 30, 0, 1), 24).is_ok());
        assert!(host_address(Ipv4Addr::new(172, 30, 0, 0), 24).is_err());
        assert!(host_address(Ipv4Addr::new(172, 30, 0, 255), 24).is_err());
        assert!(host_address(Ipv4Addr::new(172, 30, 0, 7), 29).is_err());
    }

    #[test]
    fn owner_uids() {
        assert!(owner_uid(0).is_ok() && owner_uid(1000).is_ok());
        for bad in [u32::MAX, u32::MAX - 1, 1 << 31, 65534] {
            assert!(
                matches!(owner_uid(bad), Err(HelperError::BadOwnerUid(_))),
                "{bad}"
            );
        }
    }
}
