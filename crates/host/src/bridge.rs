//! The bridge every guest tap is enslaved to, with the host's gateway address.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute};
use rtnetlink::{Handle, LinkBridge};

use crate::netlink::{connect, errno, find_link, kind, link_name, master_index, set_up};
use crate::{validate_ifname, NetError};

/// Make sure bridge `name` exists, carries `gateway/prefix` and is up.
///
/// Idempotent: safe to call on every daemon start and before every VM start. A link of
/// that name that is not a bridge is an error rather than being replaced, since it is
/// not banger's to remove. Other addresses already on the bridge are left alone.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    validate_ifname(name)?;
    if !(1..=30).contains(&prefix) {
        return Err(NetError::BadPrefix(prefix));
    }
    let handle = connect()?;
    let index = bridge_index(&handle, name, gateway).await?;
    ensure_address(&handle, name, index, gateway, prefix).await?;
    set_up(&handle, name, index, None).await
}

/// The MAC banger gives the bridge whose gateway is `gateway`.
///
/// A bridge without an explicit MAC takes the lowest MAC of its ports, so it would
/// change whenever a VM starts or stops and guests' ARP caches would point at a
/// stale address. banger pins it: the same 06:ba scheme as guest MACs, encoding the
/// gateway IP (which no guest ever has). It also marks the bridge as banger's: the
/// root helper accepts an existing bridge with this address as one banger made.
pub fn bridge_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let o = gateway.octets();
    [0x06, 0xba, o[0], o[1], o[2], o[3]]
}

/// Remove banger's bridge `name` (the one whose gateway is `gateway`); its address and
/// route go with it. Absent is fine. Refused when the link is not a bridge carrying
/// banger's MAC ([`bridge_mac`]: someone else's bridge of that name is not banger's to
/// remove) or when anything is still enslaved to it (a running VM's tap).
pub async fn delete_bridge(name: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
    validate_ifname(name)?;
    let handle = connect()?;
    let Some(msg) = find_link(&handle, name).await? else {
        return Ok(());
    };
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => Some(b.as_slice() == bridge_mac(gateway).as_slice()),
        _ => None,
    });
    if kind(&msg) != Some(&InfoKind::Bridge) || mac != Some(true) {
        return Err(NetError::NotBangers(name.to_string()));
    }
    let ports = ports_of(&handle, msg.header.index).await?;
    if !ports.is_empty() {
        return Err(NetError::InUse {
            name: name.to_string(),
            ports: ports.join(", "),
        });
    }
    match handle.link().del(msg.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(source) => Err(NetError::Netlink {
            what: "delete bridge",
            name: name.to_string(),
            source,
        }),
    }
}

/// Names of the links enslaved to the link with index `master`.
async fn ports_of(handle: &Handle, master: u32) -> Result<Vec<String>, NetError> {
    let mut links = handle.link().get().execute();
    let mut out = vec![];
    loop {
        match links.try_next().await {
            Ok(Some(m)) => {
                if master_index(&m) == Some(master) {
                    out.push(link_name(&m).unwrap_or_else(|| format!("#{}", m.header.index)));
                }
            }
            Ok(None) => return Ok(out),
            Err(source) => {
                return Err(NetError::Netlink {
                    what: "list links for ports of",
                    name: format!("#{master}"),
                    source,
                })
            }
        }
    }
}

/// Index of the existing bridge, creating it first if needed.
async fn bridge_index(handle: &Handle, name: &str, gateway: Ipv4Addr) -> Result<u32, NetError> {
    if let Some(msg) = find_link(handle, name).await? {
        return if kind(&msg) == Some(&InfoKind::Bridge) {
            Ok(msg.header.index)
        } else {
            Err(NetError::WrongKind {
                name: name.to_string(),
                want: "bridge",
            })
        };
    }
    let mac = bridge_mac(gateway).to_vec();
    let created = handle
        .link()
        .add(LinkBridge::new(name).address(mac).build())
        .execute()
        .await;
    match created {
        Ok(()) => {}
        // Someone else created it between our lookup and our add: fine if it's a bridge.
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(source) => {
            return Err(NetError::Netlink {
                what: "create bridge",
                name: name.to_string(),
                source,
            })
        }
    }
    match find_link(handle, name).await? {
        Some(msg) if kind(&msg) == Some(&InfoKind::Bridge) => Ok(msg.header.index),
        Some(_) => Err(NetError::WrongKind {
            name: name.to_string(),
            want: "bridge",
        }),
        None => Err(NetError::Missing(name.to_string())),
    }
}

/// Add `gateway/prefix` to the bridge unless it is already there.
async fn ensure_address(
    handle: &Handle,
    name: &str,
    index: u32,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let netlink_err = |what| {
        move |source| NetError::Netlink {
            what,
            name: name.to_string(),
            source,
        }
    };
    let want = IpAddr::V4(gateway);
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(netlink_err("list addresses of"))?
    {
        let has = msg.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == want)
        });
        if has && msg.header.prefix_len == prefix {
            return Ok(());
        }
    }
    match handle.address().add(index, want, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(netlink_err("add address to")(e)),
    }
}
