//! What the host already routes: every IPv4 route and address, so the root helper can
//! refuse a guest subnet that would shadow a network the host uses.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use crate::netlink::connect;
use crate::NetError;

/// One IPv4 route of any table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length (0 for a default route).
    pub prefix: u8,
    /// Output interface index, when the route names one.
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
}

/// One IPv4 address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr4 {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Its label (normally the interface name).
    pub label: Option<String>,
}

/// Every IPv4 route in every table of the calling thread's network namespace
/// (a plain dump: without strict checking the kernel returns all tables).
pub async fn ipv4_routes() -> Result<Vec<Route4>, NetError> {
    let handle = connect()?;
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = vec![];
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|source| NetError::Netlink {
            what: "list routes of",
            name: "every table".into(),
            source,
        })?
    {
        if msg.header.address_family != AddressFamily::Inet {
            continue;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut oif = None;
        let mut table = u32::from(msg.header.table);
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        out.push(Route4 {
            dst,
            prefix: msg.header.destination_prefix_length,
            oif,
            table,
        });
    }
    Ok(out)
}

/// Every IPv4 address on every link of the calling thread's network namespace.
pub async fn ipv4_addresses() -> Result<Vec<Addr4>, NetError> {
    let handle = connect()?;
    let mut stream = handle.address().get().execute();
    let mut out = vec![];
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|source| NetError::Netlink {
            what: "list addresses of",
            name: "every link".into(),
            source,
        })?
    {
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let any = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let label = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Label(l) => Some(l.clone()),
            _ => None,
        });
        if let Some(addr) = local.or(any) {
            out.push(Addr4 {
                index: msg.header.index,
                addr,
                prefix: msg.header.prefix_len,
                label,
            });
        }
    }
    Ok(out)
}
