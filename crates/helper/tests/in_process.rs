//! `InProcess` end to end: validation in `run`, then real host changes, each test in
//! its own network namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_testns as common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_helper::{HelperError, InProcess, PrivOp, Privileged};
use common::{in_netns, root_or_skip, sh};

#[test]
fn run_validates_before_touching_the_host() {
    // Names the kernel would refuse anyway, so even a validation bug cannot change
    // the host; the assertion is that the *helper* refused them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let p: Arc<dyn Privileged> = Arc::new(InProcess::default());
    rt.block_on(async {
        let err = p
            .run(PrivOp::CreateTap {
                name: "not a tap".into(),
                bridge: "banger0".into(),
                owner_uid: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, HelperError::BadTapName(_)), "{err}");
        let err = p
            .run(PrivOp::EnsureBridge {
                name: "bad name!".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, HelperError::BadBridgeName(_)), "{err}");
    });
}

#[test]
fn bridge_tap_and_nat_through_the_trait_object() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let p: Arc<dyn Privileged> = Arc::new(InProcess::default());
        let subnet = "172.30.0.0/24".parse().unwrap();
        p.run(PrivOp::EnsureBridge {
            name: "bgtest0".into(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            prefix: 24,
        })
        .await
        .unwrap();
        let tap = banger_host::tap_name("a1b2c3d4e5f60718");
        p.run(PrivOp::CreateTap {
            name: tap.clone(),
            bridge: "bgtest0".into(),
            owner_uid: Some(1000),
        })
        .await
        .unwrap();
        let st = banger_host::link_state(&tap).await.unwrap().unwrap();
        assert_eq!(st.master.as_deref(), Some("bgtest0"));
        assert_eq!(st.tap_owner, Some(1000));

        p.run(PrivOp::EnableNat {
            bridge: "bgtest0".into(),
            subnet,
        })
        .await
        .unwrap();
        assert!(sh(&["nft", "list", "table", "ip", "banger"]).contains("masquerade"));
        p.run(PrivOp::DisableNat {
            bridge: "bgtest0".into(),
        })
        .await
        .unwrap();
        assert!(!sh(&["nft", "list", "tables"]).contains("banger"));

        p.run(PrivOp::DeleteTap { name: tap.clone() })
            .await
            .unwrap();
        assert!(!banger_host::link_exists(&tap).await.unwrap());
        p.run(PrivOp::DeleteTap { name: tap }).await.unwrap();

        // The bridge itself is not banger's tap: the helper will not delete it.
        let err = p
            .run(PrivOp::DeleteTap {
                name: "bgtest0".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, HelperError::BadTapName(_)), "{err}");
        assert!(banger_host::link_exists("bgtest0").await.unwrap());
    });
}

#[test]
fn host_failures_surface_as_helper_errors() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let err = InProcess::default()
            .run(PrivOp::CreateTap {
                name: "bgr1".into(),
                bridge: "nobridge".into(),
                owner_uid: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, HelperError::Host(banger_host::NetError::Missing(_))),
            "{err}"
        );
        assert!(err.to_string().contains("ensure_bridge"), "{err}");
    });
}

/// Everything a VM's start adds (bridge, NAT, isolation, a tap and its rules) goes
/// again with `DeleteTap`, `DeleteBridge`, `DisableIsolation` and `DisableNat`: no
/// nftables rule, link, address or route is left.
#[test]
fn isolation_and_bridge_teardown_leave_nothing() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let p: Arc<dyn Privileged> = Arc::new(InProcess::default());
        let gw = Ipv4Addr::new(172, 30, 0, 1);
        let before_routes = sh(&["ip", "-4", "route"]);
        let bridge = |name: &str| PrivOp::EnsureBridge {
            name: name.into(),
            gateway: gw,
            prefix: 24,
        };
        p.run(bridge("bgtest0")).await.unwrap();
        p.run(PrivOp::EnableNat {
            bridge: "bgtest0".into(),
            subnet: "172.30.0.0/24".parse().unwrap(),
        })
        .await
        .unwrap();
        p.run(PrivOp::EnableIsolation {
            bridge: "bgtest0".into(),
            gateway: gw,
            prefix: 24,
            host_tcp_ports: vec![],
        })
        .await
        .unwrap();
        let tap = banger_host::tap_name("feedc0de");
        p.run(PrivOp::CreateTap {
            name: tap.clone(),
            bridge: "bgtest0".into(),
            owner_uid: None,
        })
        .await
        .unwrap();
        p.run(PrivOp::IsolateTap {
            name: tap.clone(),
            ip: Ipv4Addr::new(172, 30, 0, 9),
        })
        .await
        .unwrap();
        let rules = sh(&["nft", "list", "table", "bridge", "banger"]);
        assert!(rules.contains(&format!("tap-{tap}")), "{rules}");
        assert!(rules.contains("06:ba:ac:1e:00:09"), "{rules}");
        assert!(rules.contains("172.30.0.9"), "{rules}");

        // The bridge is refused while the tap is on it.
        let err = p
            .run(PrivOp::DeleteBridge {
                name: "bgtest0".into(),
                gateway: gw,
                prefix: 24,
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&tap), "{err}");

        p.run(PrivOp::DeleteTap { name: tap.clone() })
            .await
            .unwrap();
        let rules = sh(&["nft", "list", "table", "bridge", "banger"]);
        assert!(!rules.contains(&tap), "the tap's rules stayed: {rules}");
        p.run(PrivOp::DeleteBridge {
            name: "bgtest0".into(),
            gateway: gw,
            prefix: 24,
        })
        .await
        .unwrap();
        p.run(PrivOp::DisableIsolation {
            bridge: "bgtest0".into(),
        })
        .await
        .unwrap();
        p.run(PrivOp::DisableNat {
            bridge: "bgtest0".into(),
        })
        .await
        .unwrap();
        assert_eq!(sh(&["nft", "list", "ruleset"]).trim(), "");
        let links = sh(&["ip", "-br", "link"]);
        assert_eq!(links.lines().count(), 1, "only lo is left: {links}");
        assert_eq!(sh(&["ip", "-4", "route"]), before_routes);
        assert_eq!(
            sh(&["ip", "-4", "-o", "addr"])
                .lines()
                .filter(|l| !l.contains(" lo "))
                .count(),
            0
        );
    });
}
