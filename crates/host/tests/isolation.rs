//! Guest isolation against real spoofing attempts: two "guests" are network
//! namespaces hanging off a bridge through veth pairs named like banger's taps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_testns as common;

use std::net::Ipv4Addr;
use std::process::Command;

use banger_host::*;
use common::{in_netns, root_or_skip, sh};

const GW: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
const MAC1: &str = "06:ba:ac:1e:00:02";
const MAC2: &str = "06:ba:ac:1e:00:03";

/// A named namespace standing in for a guest, removed on drop.
struct Guest(String);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn guest(tag: &str, tap: &str, mac: &str, ip: &str) -> Guest {
    let ns = format!("bgiso-{tag}-{}", std::process::id());
    sh(&["ip", "netns", "add", &ns]);
    let g = Guest(ns.clone());
    sh(&[
        "ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    sh(&["ip", "link", "set", tap, "master", "bgtest0", "up"]);
    let x = |args: &[&str]| {
        let mut a = vec!["ip", "netns", "exec", &ns];
        a.extend_from_slice(args);
        sh(&a);
    };
    x(&["ip", "link", "set", "eth0", "address", mac]);
    x(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    x(&["ip", "link", "set", "eth0", "up"]);
    x(&["ip", "link", "set", "lo", "up"]);
    g
}

fn in_guest(g: &Guest, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &g.0])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Does the host reach `ip` (fresh neighbour cache, so ARP is asked again)?
fn host_pings(ip: &str) -> bool {
    let _ = Command::new("ip").args(["neigh", "flush", "all"]).status();
    Command::new("ping")
        .args(["-c", "1", "-W", "1", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn nft_available() -> bool {
    let ok = Command::new("nft").arg("--version").output().is_ok()
        || std::path::Path::new("/usr/sbin/nft").exists();
    if !ok {
        eprintln!("skipping: nft is not installed (apt-get install nftables)");
        return false;
    }
    if Command::new("ping").arg("-V").output().is_err() {
        eprintln!("skipping: ping is not installed (apt-get install iputils-ping)");
        return false;
    }
    true
}

#[test]
fn a_guest_cannot_impersonate_another_vm_or_reach_the_host() {
    if !root_or_skip() || !nft_available() {
        return;
    }
    in_netns(|| async {
        sh(&["ip", "link", "set", "lo", "up"]);
        ensure_bridge("bgtest0", GW, 24).await.unwrap();
        let g1 = guest("a", "bgr1", MAC1, "172.30.0.2");
        let g2 = guest("b", "bgr2", MAC2, "172.30.0.3");

        // Sanity, without isolation: g2 can take over 172.30.0.2 once g1 is gone.
        let take_over = |g: &Guest| {
            assert!(in_guest(
                g,
                &["ip", "addr", "add", "172.30.0.2/32", "dev", "eth0"]
            ));
        };
        assert!(host_pings("172.30.0.2") && host_pings("172.30.0.3"));
        assert!(in_guest(&g1, &["ip", "link", "set", "eth0", "down"]));
        take_over(&g2);
        assert!(
            host_pings("172.30.0.2"),
            "the spoof should work without rules"
        );
        assert!(in_guest(
            &g2,
            &["ip", "addr", "del", "172.30.0.2/32", "dev", "eth0"]
        ));
        assert!(in_guest(&g1, &["ip", "link", "set", "eth0", "up"]));

        enable_guard(default_nft(), "bgtest0", GW, &[])
            .await
            .unwrap();
        isolate_tap(default_nft(), "bgr1", MAC1, "172.30.0.2".parse().unwrap())
            .await
            .unwrap();
        isolate_tap(default_nft(), "bgr2", MAC2, "172.30.0.3".parse().unwrap())
            .await
            .unwrap();
        // Idempotent.
        isolate_tap(default_nft(), "bgr2", MAC2, "172.30.0.3".parse().unwrap())
            .await
            .unwrap();
        assert!(host_pings("172.30.0.2") && host_pings("172.30.0.3"));
        assert!(
            in_guest(&g1, &["ping", "-c", "1", "-W", "1", "172.30.0.3"]),
            "guests still talk"
        );

        // IP + ARP spoofing: g2 answers for 172.30.0.2 while g1 is away.
        assert!(in_guest(&g1, &["ip", "link", "set", "eth0", "down"]));
        take_over(&g2);
        assert!(
            !host_pings("172.30.0.2"),
            "g2 received traffic for 172.30.0.2"
        );
        // Full impersonation: g1's MAC and IP.
        assert!(in_guest(
            &g2,
            &["ip", "link", "set", "eth0", "address", MAC1]
        ));
        assert!(!host_pings("172.30.0.2"), "g2 impersonated g1 with its MAC");
        assert!(in_guest(
            &g2,
            &["ip", "link", "set", "eth0", "address", MAC2]
        ));
        assert!(in_guest(
            &g2,
            &["ip", "addr", "del", "172.30.0.2/32", "dev", "eth0"]
        ));

        // The host: DNS and ping yes, other ports no (until opted in).
        let l = std::net::TcpListener::bind((GW, 8080)).unwrap();
        let d = std::net::TcpListener::bind((GW, 53)).unwrap();
        std::thread::spawn(move || for _ in l.incoming() {});
        std::thread::spawn(move || for _ in d.incoming() {});
        let connect = |port: &str| {
            in_guest(
                &g2,
                &[
                    "bash",
                    "-c",
                    &format!("timeout 2 bash -c '</dev/tcp/172.30.0.1/{port}'"),
                ],
            )
        };
        assert!(in_guest(&g2, &["ping", "-c", "1", "-W", "1", "172.30.0.1"]));
        assert!(connect("53"), "DNS on the gateway must stay reachable");
        assert!(
            !connect("8080"),
            "a host port was reachable without opting in"
        );
        enable_guard(default_nft(), "bgtest0", GW, &[8080])
            .await
            .unwrap();
        assert!(connect("8080"), "an opted-in port was not reachable");
        // Refreshing the guard kept the taps' rules.
        assert!(!host_pings("172.30.0.9"));
        let rules = sh(&["nft", "list", "table", "bridge", "banger"]);
        assert!(
            rules.contains("tap-bgr1") && rules.contains("tap-bgr2"),
            "{rules}"
        );

        // Releasing a tap and disabling the guard leave nothing of banger's.
        release_tap(default_nft(), "bgr1").await.unwrap();
        release_tap(default_nft(), "bgr1").await.unwrap();
        let rules = sh(&["nft", "list", "table", "bridge", "banger"]);
        assert!(!rules.contains("tap-bgr1"), "{rules}");
        disable_guard(default_nft()).await.unwrap();
        disable_guard(default_nft()).await.unwrap();
        assert_eq!(sh(&["nft", "list", "ruleset"]).trim(), "");
        drop((g1, g2));
    });
}
