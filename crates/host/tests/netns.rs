//! Real bridge, tap and NAT operations, each test inside its own network namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_testns as common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use banger_host::*;
use banger_model::Subnet;
use common::{in_netns, root_or_skip, sh};

const GW: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

#[test]
fn bridge_is_idempotent_with_one_address_and_a_pinned_mac() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let t = Instant::now();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        eprintln!("ensure_bridge (create): {:?}", t.elapsed());
        let t = Instant::now();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        eprintln!("ensure_bridge (already there): {:?}", t.elapsed());

        let st = link_state("bgtest0").await.unwrap().unwrap();
        assert_eq!(st.kind.as_deref(), Some("bridge"));
        assert!(st.up);
        let addrs = sh(&["ip", "-4", "-o", "addr", "show", "dev", "bgtest0"]);
        assert_eq!(addrs.lines().count(), 1, "{addrs}");
        assert!(addrs.contains("inet 172.30.0.1/24"), "{addrs}");
        let link = sh(&["ip", "-o", "link", "show", "dev", "bgtest0"]);
        assert!(link.contains("link/ether 06:ba:ac:1e:00:01"), "{link}");
    });
}

#[test]
fn bridge_address_is_readded_when_removed() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        sh(&["ip", "addr", "flush", "dev", "bgtest0"]);
        sh(&["ip", "link", "set", "bgtest0", "down"]);
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        let addrs = sh(&["ip", "-4", "-o", "addr", "show", "dev", "bgtest0"]);
        assert!(addrs.contains("inet 172.30.0.1/24"), "{addrs}");
        assert!(link_state("bgtest0").await.unwrap().unwrap().up);
    });
}

#[test]
fn ensure_bridge_refuses_a_link_that_is_not_a_bridge() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        sh(&[
            "ip", "link", "add", "notbr", "type", "veth", "peer", "name", "notbr1",
        ]);
        let err = ensure_bridge("notbr", GW, 24).await.unwrap_err();
        assert!(
            matches!(err, NetError::WrongKind { want: "bridge", .. }),
            "{err}"
        );
        assert!(matches!(
            ensure_bridge("bgtest0", GW, 31).await,
            Err(NetError::BadPrefix(31))
        ));
    });
}

#[test]
fn tap_is_created_owned_enslaved_reusable_and_deleted() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        let tap = tap_name("0123456789abcdef");
        assert_eq!(tap, "bgr0123456789ab");

        let t = Instant::now();
        create_tap(&tap, "bgtest0", Some(1234)).await.unwrap();
        eprintln!("create_tap: {:?}", t.elapsed());
        let st = link_state(&tap).await.unwrap().unwrap();
        assert_eq!(st.kind.as_deref(), Some("tun"));
        assert_eq!(st.master.as_deref(), Some("bgtest0"));
        assert!(st.up);
        assert!(st.tap_persist);
        assert_eq!(st.tap_owner, Some(1234));
        assert!(!st.lower_up, "nobody holds the tap yet");

        // Attach the way QEMU's -netdev tap,ifname= does; then it is busy for others.
        let fd = open_tap(&tap).unwrap();
        assert!(link_state(&tap).await.unwrap().unwrap().lower_up);
        assert!(matches!(open_tap(&tap), Err(NetError::TapBusy(_))));
        assert!(matches!(
            create_tap(&tap, "bgtest0", None).await,
            Err(NetError::TapBusy(_))
        ));
        drop(fd);

        // A leftover tap is taken over: new owner, still enslaved and persistent.
        create_tap(&tap, "bgtest0", Some(4321)).await.unwrap();
        let st = link_state(&tap).await.unwrap().unwrap();
        assert_eq!(st.tap_owner, Some(4321));
        assert_eq!(st.master.as_deref(), Some("bgtest0"));

        let t = Instant::now();
        delete_link(&tap).await.unwrap();
        eprintln!("delete_link (tap): {:?}", t.elapsed());
        assert!(!link_exists(&tap).await.unwrap());
        delete_link(&tap).await.unwrap();
        assert!(
            link_exists("bgtest0").await.unwrap(),
            "deleting the tap keeps the bridge"
        );
    });
}

#[test]
fn create_tap_needs_an_existing_bridge_and_valid_names() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        assert!(matches!(
            create_tap("bgr1", "nobridge", None).await,
            Err(NetError::Missing(b)) if b == "nobridge"
        ));
        assert!(!link_exists("bgr1").await.unwrap(), "no tap left behind");
        sh(&[
            "ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum1",
        ]);
        assert!(matches!(
            create_tap("bgr1", "dum0", None).await,
            Err(NetError::WrongKind { .. })
        ));
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        assert!(matches!(
            create_tap("dum0", "bgtest0", None).await,
            Err(NetError::WrongKind { want: "tap", .. })
        ));
        assert!(matches!(
            create_tap("bgr0123456789abc", "bgtest0", None).await,
            Err(NetError::InvalidName { .. })
        ));
        assert!(matches!(
            ensure_bridge("bad name", GW, 24).await,
            Err(NetError::InvalidName { .. })
        ));
        assert!(matches!(
            delete_link("a/b").await,
            Err(NetError::InvalidName { .. })
        ));
    });
}

#[test]
fn qemu_opens_the_persistent_tap_with_vnet_hdr() {
    if !root_or_skip() {
        return;
    }
    let qemu = "/usr/bin/qemu-system-x86_64";
    if !std::path::Path::new(qemu).exists() {
        eprintln!("skipping: {qemu} not installed");
        return;
    }
    in_netns(move || async move {
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        create_tap("bgrq1", "bgtest0", None).await.unwrap();
        // No machine, no guest: QEMU only opens the tap (paused, -S), sending nothing.
        let mut child = tokio::process::Command::new(qemu)
            .args([
                "-M",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-monitor",
                "none",
            ])
            .args([
                "-netdev",
                "tap,id=n0,ifname=bgrq1,script=no,downscript=no,vnet_hdr=on",
            ])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let attached = loop {
            if link_state("bgrq1").await.unwrap().unwrap().lower_up {
                break true;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().await.unwrap();
                panic!(
                    "qemu exited {status}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        child.kill().await.unwrap();
        assert!(attached, "qemu never attached to the tap");
        // Once QEMU is gone the tap stays (persistent) and is free again.
        assert!(link_exists("bgrq1").await.unwrap());
        drop(open_tap("bgrq1").unwrap());
    });
}

fn read_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

#[test]
fn nat_table_is_idempotent_and_removed_whole() {
    if !root_or_skip() {
        return;
    }
    let host_forward = read_ip_forward();
    in_netns(|| async {
        let subnet: Subnet = "172.30.0.0/24".parse().unwrap();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        let t = Instant::now();
        enable_nat("bgtest0", subnet).await.unwrap();
        eprintln!("enable_nat: {:?}", t.elapsed());
        enable_nat("bgtest0", subnet).await.unwrap();

        let rules = sh(&["nft", "list", "ruleset"]);
        assert_eq!(rules.matches("table ip banger").count(), 1, "{rules}");
        assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
        assert!(
            rules.contains("ip saddr 172.30.0.0/24 oifname != \"bgtest0\" masquerade"),
            "{rules}"
        );
        assert_eq!(
            read_ip_forward().trim(),
            "1",
            "forwarding on inside the namespace"
        );

        // Re-enabling with another subnet replaces the rule rather than adding one.
        enable_nat("bgtest0", "10.77.0.0/16".parse().unwrap())
            .await
            .unwrap();
        let rules = sh(&["nft", "list", "ruleset"]);
        assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
        assert!(rules.contains("10.77.0.0/16"), "{rules}");

        disable_nat().await.unwrap();
        assert!(!sh(&["nft", "list", "tables"]).contains("banger"));
        disable_nat().await.unwrap();
    });
    assert_eq!(read_ip_forward(), host_forward, "host ip_forward untouched");
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let r = futures::executor::block_on(link_exists("lo"));
    assert!(matches!(r, Err(NetError::NoRuntime)), "{r:?}");
}

#[test]
fn routes_addresses_and_link_kinds_as_the_helper_sees_them() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        let st = link_state("bgtest0").await.unwrap().unwrap();
        assert_eq!(st.mac, Some(bridge_mac(GW)));
        assert!(!st.is_tap);
        let addrs = ipv4_addresses().await.unwrap();
        let a = addrs.iter().find(|a| a.addr == GW).unwrap();
        assert_eq!(
            (a.index, a.prefix, a.label.as_deref()),
            (st.index, 24, Some("bgtest0"))
        );
        let routes = ipv4_routes().await.unwrap();
        assert!(
            routes.iter().any(|r| r.dst == Ipv4Addr::new(172, 30, 0, 0)
                && r.prefix == 24
                && r.oif == Some(st.index)),
            "{routes:?}"
        );
        create_tap("bgr1", "bgtest0", Some(1000)).await.unwrap();
        assert!(link_state("bgr1").await.unwrap().unwrap().is_tap);
        sh(&["ip", "tuntap", "add", "dev", "bgr2", "mode", "tun"]);
        let tun = link_state("bgr2").await.unwrap().unwrap();
        assert_eq!(tun.kind.as_deref(), Some("tun"));
        assert!(!tun.is_tap, "a tun device is not a tap");
    });
}

#[test]
fn bridge_is_deleted_only_when_it_is_bangers_and_empty() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        // Absent: nothing to do.
        delete_bridge("bgtest0", GW).await.unwrap();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        create_tap("bgr77", "bgtest0", None).await.unwrap();
        let err = delete_bridge("bgtest0", GW).await.unwrap_err();
        assert!(matches!(err, NetError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("bgr77"), "{err}");
        delete_link("bgr77").await.unwrap();
        delete_bridge("bgtest0", GW).await.unwrap();
        assert!(link_state("bgtest0").await.unwrap().is_none());
        // Its address and connected route went with it.
        let routes = sh(&["ip", "-4", "route"]);
        assert!(!routes.contains("172.30.0."), "{routes}");
        // Someone else's bridge of that name is left alone.
        sh(&["ip", "link", "add", "bgtest0", "type", "bridge"]);
        let err = delete_bridge("bgtest0", GW).await.unwrap_err();
        assert!(matches!(err, NetError::NotBangers(_)), "{err}");
        assert!(link_state("bgtest0").await.unwrap().is_some());
    });
}

/// systemd-resolved's link settings (through a fake resolvectl that logs its
/// arguments): applied once per bridge, again when the bridge is made anew (a new
/// interface index), reverted before the bridge goes.
#[test]
fn resolved_settings_follow_the_bridge() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let tool = d.path().join("resolvectl");
        std::fs::write(
            &tool,
            format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Resolved::with(&tool);
        let dns = LinkDns::default();
        let calls = || std::fs::read_to_string(&log).unwrap_or_default();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        dns.ensure(Some(&r), "bgtest0", GW).await.unwrap();
        dns.ensure(Some(&r), "bgtest0", GW).await.unwrap();
        assert_eq!(
            calls(),
            "dns bgtest0 172.30.0.1\ndomain bgtest0 ~vm\ndefault-route bgtest0 false\n"
        );
        // Made anew (someone deleted it): applied again.
        delete_bridge("bgtest0", GW).await.unwrap();
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        dns.ensure(Some(&r), "bgtest0", GW).await.unwrap();
        assert_eq!(calls().matches("domain bgtest0 ~vm").count(), 2);
        dns.revert(Some(&r), "bgtest0").await.unwrap();
        assert!(calls().ends_with("revert bgtest0\n"), "{}", calls());
        // Without resolved nothing runs.
        dns.ensure(None, "bgtest0", GW).await.unwrap();
        assert_eq!(calls().lines().count(), 7);
    });
}
