//! Thin helpers over rtnetlink: connecting, looking links up, deleting them.

use futures::TryStreamExt;
use rtnetlink::packet_core::Nla;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoTun, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec};

use crate::{validate_ifname, NetError};

/// IFLA_TUN_OWNER from linux/if_link.h (rtnetlink does not decode tun attributes).
const IFLA_TUN_OWNER: u16 = 1;
/// IFLA_TUN_PERSIST from linux/if_link.h.
const IFLA_TUN_PERSIST: u16 = 6;
/// IFLA_TUN_TYPE from linux/if_link.h: IFF_TUN (1) or IFF_TAP (2), one byte.
const IFLA_TUN_TYPE: u16 = 3;
/// IFF_TAP as IFLA_TUN_TYPE reports it.
const TUN_TYPE_TAP: u8 = 2;

/// What banger cares about for one link; for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// rtnetlink kind: "bridge", "tun" (taps too), or None for plain devices.
    pub kind: Option<String>,
    /// Name of the bridge (or other master) this link is enslaved to.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Carrier: for a tap, whether a process (the VMM) has it open.
    pub lower_up: bool,
    /// For taps: the uid allowed to open it without CAP_NET_ADMIN.
    pub tap_owner: Option<u32>,
    /// For taps: whether it survives its last file descriptor being closed.
    pub tap_persist: bool,
    /// A tun-driver link in tap (Ethernet) mode. `kind` is "tun" for both tun and
    /// tap devices; only this tells them apart.
    pub is_tap: bool,
    /// The link's hardware address, when it has a 6-byte one.
    pub mac: Option<[u8; 6]>,
}

/// Open a netlink connection in the calling thread's network namespace.
///
/// A fresh connection per operation keeps the API free functions and costs one
/// socket; the spawned driver task ends as soon as the returned handle is dropped.
pub(crate) fn connect() -> Result<Handle, NetError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
    rt.spawn(conn);
    Ok(handle)
}

/// The positive errno of a netlink error, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Look a link up by name; `None` when it does not exist.
pub(crate) async fn find_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(NetError::Netlink {
            what: "look up link",
            name: name.to_string(),
            source,
        }),
    }
}

/// Look a link up by index; `None` when it does not exist.
async fn find_index(handle: &Handle, index: u32) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(NetError::Netlink {
            what: "look up link",
            name: format!("#{index}"),
            source,
        }),
    }
}

/// The rtnetlink kind of a link ("bridge", "tun", ...).
pub(crate) fn kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

pub(crate) fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

pub(crate) fn master_index(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) if *i != 0 => Some(*i),
        _ => None,
    })
}

fn tun_attrs(msg: &LinkMessage) -> impl Iterator<Item = &InfoTun> {
    msg.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(InfoData::Tun(nlas)) => Some(nlas),
            _ => None,
        })
        .flatten()
}

fn tun_attr_bytes(msg: &LinkMessage, kind: u16) -> Option<Vec<u8>> {
    tun_attrs(msg).find(|n| n.kind() == kind).map(|n| {
        let mut buf = vec![0u8; n.value_len()];
        n.emit_value(&mut buf);
        buf
    })
}

/// Whether a link called `name` exists (in the calling thread's namespace).
pub async fn link_exists(name: &str) -> Result<bool, NetError> {
    validate_ifname(name)?;
    let handle = connect()?;
    Ok(find_link(&handle, name).await?.is_some())
}

/// Kind, master, state and tap ownership of a link; `None` when it does not exist.
pub async fn link_state(name: &str) -> Result<Option<LinkState>, NetError> {
    validate_ifname(name)?;
    let handle = connect()?;
    let Some(msg) = find_link(&handle, name).await? else {
        return Ok(None);
    };
    let master = match master_index(&msg) {
        Some(i) => find_index(&handle, i).await?.as_ref().and_then(link_name),
        None => None,
    };
    let tap_owner = tun_attr_bytes(&msg, IFLA_TUN_OWNER)
        .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
        .map(u32::from_ne_bytes);
    let tap_persist = tun_attr_bytes(&msg, IFLA_TUN_PERSIST)
        .and_then(|b| b.first().copied())
        .is_some_and(|b| b != 0);
    let is_tap = tun_attr_bytes(&msg, IFLA_TUN_TYPE)
        .and_then(|b| b.first().copied())
        .is_some_and(|t| t == TUN_TYPE_TAP);
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    Ok(Some(LinkState {
        index: msg.header.index,
        kind: kind(&msg).map(|k| k.to_string()),
        master,
        up: msg.header.flags.contains(LinkFlags::Up),
        lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
        tap_owner,
        tap_persist,
        is_tap,
        mac,
    }))
}

/// Delete a link by name. Absent is success: callers delete on cleanup paths where
/// the link may already be gone (daemon restart, VM that never started).
pub async fn delete_link(name: &str) -> Result<(), NetError> {
    validate_ifname(name)?;
    let handle = connect()?;
    let Some(msg) = find_link(&handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(msg.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(source) => Err(NetError::Netlink {
            what: "delete link",
            name: name.to_string(),
            source,
        }),
    }
}

/// Enslave link `index` to `master` (when given) and set it up, like
/// `ip link set NAME master BR up`.
pub(crate) async fn set_up(
    handle: &Handle,
    name: &str,
    index: u32,
    master: Option<u32>,
) -> Result<(), NetError> {
    let mut msg = LinkUnspec::new_with_index(index).up();
    if let Some(m) = master {
        msg = msg.controller(m);
    }
    handle
        .link()
        .change(msg.build())
        .execute()
        .await
        .map_err(|source| NetError::Netlink {
            what: if master.is_some() {
                "enslave and set up"
            } else {
                "set up"
            },
            name: name.to_string(),
            source,
        })
}
