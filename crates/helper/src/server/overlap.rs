//! Refusing a guest subnet that would shadow a network the host already uses: a
//! route (a LAN, a VPN, another bridge such as docker0) or an address on any link
//! other than banger's own bridge. Default routes (prefix 0) overlap everything and
//! are not what this is about; the `local` table's entries duplicate the addresses.

use std::net::Ipv4Addr;

use banger_model::Subnet;

use crate::HelperError;

/// The kernel's `local` routing table.
const RT_TABLE_LOCAL: u32 = 255;

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Whether `a` and `net/prefix` share any address.
pub(crate) fn overlaps(a: Subnet, net: Ipv4Addr, prefix: u8) -> bool {
    let m = mask(a.prefix.min(prefix));
    u32::from(a.network) & m == u32::from(net) & m
}

/// Refuse `subnet` if a route or address of the calling thread's namespace overlaps it,
/// ignoring those on `own_bridge` (banger's bridge, by index).
pub(crate) async fn check(subnet: Subnet, own_bridge: Option<u32>) -> Result<(), HelperError> {
    let own = |i: Option<u32>| own_bridge.is_some() && i == own_bridge;
    for r in banger_host::ipv4_routes().await? {
        if r.prefix == 0 || r.table == RT_TABLE_LOCAL || own(r.oif) {
            continue;
        }
        if overlaps(subnet, r.dst, r.prefix) {
            let via = r
                .oif
                .map(|i| format!(" via interface #{i}"))
                .unwrap_or_default();
            return Err(HelperError::SubnetOverlap {
                subnet,
                with: format!(
                    "the host route {}/{}{via} (table {})",
                    r.dst, r.prefix, r.table
                ),
            });
        }
    }
    for a in banger_host::ipv4_addresses().await? {
        if own(Some(a.index)) {
            continue;
        }
        if overlaps(subnet, a.addr, a.prefix) {
            let on = a
                .label
                .clone()
                .unwrap_or_else(|| format!("interface #{}", a.index));
            return Err(HelperError::SubnetOverlap {
                subnet,
                with: format!("the host address {}/{} on {on}", a.addr, a.prefix),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_symmetric_and_prefix_aware() {
        let s: Subnet = "172.30.0.0/24".parse().unwrap();
        let o = |n: [u8; 4], p| overlaps(s, Ipv4Addr::from(n), p);
        assert!(o([172, 30, 0, 0], 24));
        assert!(o([172, 30, 0, 128], 25));
        assert!(o([172, 30, 0, 77], 32));
        assert!(o([172, 16, 0, 0], 12));
        assert!(!o([172, 30, 1, 0], 24));
        assert!(!o([172, 31, 0, 0], 16));
        assert!(!o([10, 0, 0, 0], 8));
        assert!(o([0, 0, 0, 0], 0));
    }
}
