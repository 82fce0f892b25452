//! The privileged operations banger may ask for, and their validation.

use std::net::Ipv4Addr;

use banger_model::Subnet;
use serde::{Deserialize, Serialize};

use crate::validate;
use crate::HelperError;

/// One root-only host operation.
///
/// Serialisable so the same value can later travel to the root helper over a socket;
/// internally tagged (`{"op":"create_tap",...}`) so the wire format reads well in
/// logs, and unknown fields are refused rather than ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrivOp {
    /// Create the bridge if missing, give it `gateway/prefix`, set it up.
    EnsureBridge {
        /// Bridge name, e.g. `banger0`.
        name: String,
        /// The host's address on the bridge (the guests' default gateway).
        gateway: Ipv4Addr,
        /// Prefix length of the guest subnet.
        prefix: u8,
    },
    /// Create banger's persistent tap `name`, enslaved to `bridge`.
    CreateTap {
        /// Tap name, from `banger_host::tap_name`.
        name: String,
        /// The bridge to enslave it to.
        bridge: String,
        /// The uid the VMM runs as, if it is not root.
        owner_uid: Option<u32>,
    },
    /// Delete banger's tap `name` (absent is fine).
    DeleteTap {
        /// Tap name.
        name: String,
    },
    /// NAT traffic from `subnet` leaving the host through anything but `bridge`.
    EnableNat {
        /// The guests' bridge.
        bridge: String,
        /// The guest subnet.
        subnet: Subnet,
    },
    /// Remove banger's NAT table.
    DisableNat {
        /// The guests' bridge. banger has one NAT table whatever the bridge, but the
        /// name is carried for the audit log and so that per-bridge tables can come
        /// later without changing the wire format.
        bridge: String,
    },
    /// Install (or refresh) guest isolation for `bridge`: guests reach the host only at
    /// banger's DNS responder on `gateway` (port 53), with ping, and on
    /// `host_tcp_ports`; nobody on the bridge reaches link-local addresses; taps
    /// without their own rules send nothing (see `banger_host::isolation`).
    EnableIsolation {
        /// The guests' bridge.
        bridge: String,
        /// The host's address on it.
        gateway: Ipv4Addr,
        /// Prefix length of the guest subnet.
        prefix: u8,
        /// Host TCP ports guests may connect to (the user's opt-in).
        host_tcp_ports: Vec<u16>,
    },
    /// Remove banger's isolation tables.
    DisableIsolation {
        /// The guests' bridge (for the audit log; the tables are banger's whatever
        /// the bridge).
        bridge: String,
    },
    /// Let tap `name` send only as the guest at `ip`, with the MAC banger derives from
    /// it (`06:ba` + the address), so no guest can send as another or as the gateway.
    IsolateTap {
        /// Tap name.
        name: String,
        /// The guest's address.
        ip: Ipv4Addr,
    },
    /// Remove banger's bridge (refused while any tap is enslaved to it) and its
    /// systemd-resolved link settings; its address and route go with it.
    DeleteBridge {
        /// Bridge name.
        name: String,
        /// The host's address on it (banger's bridge carries a MAC derived from it).
        gateway: Ipv4Addr,
        /// Prefix length of the guest subnet.
        prefix: u8,
    },
}

/// The most host ports guests may be given (a list, not a range: each is a choice).
pub const MAX_HOST_PORTS: usize = 64;

impl PrivOp {
    /// Short name of the operation, as on the wire; for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PrivOp::EnsureBridge { .. } => "ensure_bridge",
            PrivOp::CreateTap { .. } => "create_tap",
            PrivOp::DeleteTap { .. } => "delete_tap",
            PrivOp::EnableNat { .. } => "enable_nat",
            PrivOp::DisableNat { .. } => "disable_nat",
            PrivOp::EnableIsolation { .. } => "enable_isolation",
            PrivOp::DisableIsolation { .. } => "disable_isolation",
            PrivOp::IsolateTap { .. } => "isolate_tap",
            PrivOp::DeleteBridge { .. } => "delete_bridge",
        }
    }

    /// Refuse anything that is not a banger-shaped request: bridges named
    /// `^[a-z][a-z0-9-]{0,14}$`, only banger's own `bgr<hex>` taps, addresses in
    /// RFC 1918 space with a /16../29 prefix, and plausible owner uids.
    pub fn validate(&self) -> Result<(), HelperError> {
        match self {
            PrivOp::EnsureBridge {
                name,
                gateway,
                prefix,
            }
            | PrivOp::DeleteBridge {
                name,
                gateway,
                prefix,
            } => validate::bridge(name, *gateway, *prefix),
            PrivOp::CreateTap {
                name,
                bridge,
                owner_uid,
            } => {
                validate::tap_name(name)?;
                validate::bridge_name(bridge)?;
                owner_uid.map_or(Ok(()), validate::owner_uid)
            }
            PrivOp::DeleteTap { name } => validate::tap_name(name),
            PrivOp::EnableNat { bridge, subnet } => {
                validate::bridge_name(bridge)?;
                validate::subnet(subnet)
            }
            PrivOp::DisableNat { bridge } | PrivOp::DisableIsolation { bridge } => {
                validate::bridge_name(bridge)
            }
            PrivOp::EnableIsolation {
                bridge,
                gateway,
                prefix,
                host_tcp_ports,
            } => {
                validate::bridge(bridge, *gateway, *prefix)?;
                validate::host_ports(host_tcp_ports)
            }
            PrivOp::IsolateTap { name, ip } => {
                validate::tap_name(name)?;
                validate::private("guest address", *ip, 32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(name: &str, gateway: [u8; 4], prefix: u8) -> PrivOp {
        PrivOp::EnsureBridge {
            name: name.into(),
            gateway: gateway.into(),
            prefix,
        }
    }

    fn tap(name: &str, bridge: &str, owner_uid: Option<u32>) -> PrivOp {
        PrivOp::CreateTap {
            name: name.into(),
            bridge: bridge.into(),
            owner_uid,
        }
    }

    fn nat(bridge: &str, network: [u8; 4], prefix: u8) -> PrivOp {
        PrivOp::EnableNat {
            bridge: bridge.into(),
            subnet: Subnet {
                network: network.into(),
                prefix,
            },
        }
    }

    #[test]
    fn accepts_banger_shaped_requests() {
        let ok = [
            bridge("banger0", [172, 30, 0, 1], 24),
            bridge("br-lab", [10, 9, 0, 1], 16),
            bridge("b", [192, 168, 100, 1], 29),
            tap("bgr0123456789ab", "banger0", Some(1000)),
            tap("bgr1", "banger0", None),
            PrivOp::DeleteTap {
                name: "bgrabc".into(),
            },
            nat("banger0", [172, 30, 0, 0], 24),
            PrivOp::DisableNat {
                bridge: "banger0".into(),
            },
            PrivOp::EnableIsolation {
                bridge: "banger0".into(),
                gateway: [172, 30, 0, 1].into(),
                prefix: 24,
                host_tcp_ports: vec![8080, 5432],
            },
            PrivOp::DisableIsolation {
                bridge: "banger0".into(),
            },
            PrivOp::IsolateTap {
                name: "bgr1a".into(),
                ip: [172, 30, 0, 2].into(),
            },
            PrivOp::DeleteBridge {
                name: "banger0".into(),
                gateway: [172, 30, 0, 1].into(),
                prefix: 24,
            },
        ];
        for op in ok {
            assert!(op.validate().is_ok(), "{op:?}: {:?}", op.validate());
        }
    }

    #[test]
    fn ensure_bridge_refusals() {
        use HelperError::*;
        let cases = [
            (bridge("eth0_x", [172, 30, 0, 1], 24), "BadBridgeName"),
            (bridge("Banger0", [172, 30, 0, 1], 24), "BadBridgeName"),
            (bridge("banger0", [8, 8, 8, 1], 24), "NotPrivate"),
            (bridge("banger0", [100, 64, 0, 1], 24), "NotPrivate"),
            (bridge("banger0", [172, 30, 0, 1], 8), "BadPrefix"),
            (bridge("banger0", [172, 30, 0, 1], 30), "BadPrefix"),
            (bridge("banger0", [172, 30, 0, 0], 24), "NotHostAddress"),
            (bridge("banger0", [172, 30, 0, 255], 24), "NotHostAddress"),
        ];
        for (op, want) in cases {
            let err = op.validate().unwrap_err();
            let got = match err {
                BadBridgeName(_) => "BadBridgeName",
                NotPrivate { .. } => "NotPrivate",
                BadPrefix(_) => "BadPrefix",
                NotHostAddress(..) => "NotHostAddress",
                _ => "other",
            };
            assert_eq!(got, want, "{op:?}");
        }
    }

    #[test]
    fn tap_refusals() {
        let err = |op: PrivOp| op.validate().unwrap_err();
        assert!(matches!(
            err(tap("eth0", "banger0", None)),
            HelperError::BadTapName(_)
        ));
        assert!(matches!(
            err(tap("banger0", "banger0", None)),
            HelperError::BadTapName(_)
        ));
        assert!(matches!(
            err(tap("bgr1", "lo_", None)),
            HelperError::BadBridgeName(_)
        ));
        assert!(matches!(
            err(tap("bgr1", "banger0", Some(u32::MAX))),
            HelperError::BadOwnerUid(_)
        ));
        assert!(matches!(
            err(tap("bgr1", "banger0", Some(65534))),
            HelperError::BadOwnerUid(_)
        ));
        assert!(matches!(
            err(PrivOp::DeleteTap {
                name: "eth0".into()
            }),
            HelperError::BadTapName(_)
        ));
        assert!(matches!(
            err(PrivOp::DeleteTap {
                name: "banger0".into()
            }),
            HelperError::BadTapName(_)
        ));
    }

    #[test]
    fn nat_refusals() {
        let err = |op: PrivOp| op.validate().unwrap_err();
        assert!(matches!(
            err(nat("banger0", [172, 30, 0, 5], 24)),
            HelperError::HostBitsSet(_)
        ));
        assert!(matches!(
            err(nat("banger0", [1, 2, 3, 0], 24)),
            HelperError::NotPrivate { what: "subnet", .. }
        ));
        assert!(matches!(
            err(nat("banger0", [10, 0, 0, 0], 8)),
            HelperError::BadPrefix(8)
        ));
        assert!(matches!(
            err(nat("BAD", [10, 0, 0, 0], 16)),
            HelperError::BadBridgeName(_)
        ));
        assert!(matches!(
            err(PrivOp::DisableNat { bridge: "".into() }),
            HelperError::BadBridgeName(_)
        ));
    }

    #[test]
    fn isolation_refusals() {
        let err = |op: PrivOp| op.validate().unwrap_err();
        let guard = |ports: Vec<u16>| PrivOp::EnableIsolation {
            bridge: "banger0".into(),
            gateway: [172, 30, 0, 1].into(),
            prefix: 24,
            host_tcp_ports: ports,
        };
        assert!(matches!(err(guard(vec![0])), HelperError::BadPorts(_)));
        assert!(matches!(
            err(guard((1..=65).collect())),
            HelperError::BadPorts(_)
        ));
        assert!(matches!(
            err(PrivOp::IsolateTap {
                name: "eth0".into(),
                ip: [172, 30, 0, 2].into()
            }),
            HelperError::BadTapName(_)
        ));
        assert!(matches!(
            err(PrivOp::IsolateTap {
                name: "bgr1".into(),
                ip: [8, 8, 8, 8].into()
            }),
            HelperError::NotPrivate { .. }
        ));
        assert!(matches!(
            err(PrivOp::DeleteBridge {
                name: "eth0_".into(),
                gateway: [172, 30, 0, 1].into(),
                prefix: 24
            }),
            HelperError::BadBridgeName(_)
        ));
    }

    #[test]
    fn wire_format_is_tagged_and_round_trips() {
        let op = tap("bgr1", "banger0", Some(1000));
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"op":"create_tap","name":"bgr1","bridge":"banger0","owner_uid":1000}"#
        );
        assert_eq!(serde_json::from_str::<PrivOp>(&json).unwrap(), op);
        let n = nat("banger0", [172, 30, 0, 0], 24);
        let back: PrivOp = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        assert_eq!(n.name(), "enable_nat");
    }

    #[test]
    fn wire_format_refuses_unknown_ops_and_fields() {
        assert!(serde_json::from_str::<PrivOp>(r#"{"op":"run_shell","cmd":"id"}"#).is_err());
        assert!(serde_json::from_str::<PrivOp>(
            r#"{"op":"delete_tap","name":"bgr1","force":true}"#
        )
        .is_err());
    }
}
