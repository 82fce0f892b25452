//! The real `banger-helper` binary over its socket, each test in its own network
//! namespace: who may talk to it, what it refuses (each refusal with its error and no
//! host change), its record of taps across a `kill -9`, and tap descriptors passed
//! to an unprivileged process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use banger_helper::wire::{HelperOp, Request};
use banger_helper::{HelperClient, PrivOp, Privileged};
use banger_testns::{in_netns, root_or_skip, sh};
use support::{config_in, links, public_tempdir, rx_packets, Helper, OWNER, STRANGER};

/// Entry point of the client child processes (`Helper::as_user`). A normal test run
/// passes through here and does nothing.
#[test]
fn client_entry() {
    let Ok(args) = std::env::var("HELPER_TEST_CLIENT") else {
        println!("skipping: entry point of the client processes the socket tests spawn");
        return;
    };
    let args: Vec<&str> = args.split('\u{1f}').collect();
    let socket = PathBuf::from(std::env::var("HELPER_TEST_SOCKET").unwrap());
    let c = HelperClient::new(&socket);
    let show = |r: Result<(), banger_helper::HelperError>| match r {
        Ok(()) => println!("RESULT ok"),
        Err(e) => println!("RESULT err {} {}", e.kind(), e),
    };
    let call = |req: Request| c.call_blocking(&req).map(drop);
    match args[0] {
        "ping" => show(call(Request::Helper(HelperOp::Ping {}))),
        "create_tap" => show(call(Request::Priv(PrivOp::CreateTap {
            name: args[1].into(),
            bridge: args[2].into(),
            owner_uid: args.get(3).map(|u| u.parse().unwrap()),
        }))),
        "delete_tap" => show(call(Request::Priv(PrivOp::DeleteTap {
            name: args[1].into(),
        }))),
        "isolate_tap" => show(call(Request::Priv(PrivOp::IsolateTap {
            name: args[1].into(),
            ip: args[2].parse().unwrap(),
        }))),
        "open_dev_net_tun" => match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(_) => println!("RESULT ok"),
            Err(e) => println!("RESULT err {}", e.kind()),
        },
        "open_tap" => {
            let r = c.call_blocking(&Request::Helper(HelperOp::OpenTap {
                name: args[1].into(),
            }));
            match r {
                Err(e) => println!("RESULT err {} {}", e.kind(), e),
                Ok((_, mut fds)) => {
                    let fd = fds.pop().unwrap();
                    // TUNGETIFF: which interface is this queue attached to?
                    // SAFETY: ifreq is plain data; all-zero is valid.
                    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
                    let code =
                        nix::request_code_read!(b'T', 210, std::mem::size_of::<libc::c_uint>());
                    // SAFETY: TUNGETIFF fills one ifreq.
                    let rc =
                        unsafe { libc::ioctl(fd.as_raw_fd(), code, &mut req as *mut libc::ifreq) };
                    assert_eq!(rc, 0, "TUNGETIFF: {}", std::io::Error::last_os_error());
                    let name: String = req
                        .ifr_name
                        .iter()
                        .take_while(|c| **c != 0)
                        .map(|c| *c as u8 as char)
                        .collect();
                    // One Ethernet broadcast frame behind a zeroed virtio-net header
                    // (the queue was opened with IFF_VNET_HDR, header size 10).
                    let mut frame = vec![0u8; 10];
                    frame.extend_from_slice(&[0xff; 6]);
                    frame.extend_from_slice(&[0x06, 0xba, 0xac, 0x1e, 0x00, 0x09]);
                    frame.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
                    frame.resize(10 + 60, 0x42);
                    let n = nix::unistd::write(&fd, &frame).unwrap();
                    println!("RESULT ok {name} {n}");
                }
            }
        }
        "bind_dns" => {
            let proto = if args[2] == "tcp" {
                banger_helper::DnsProto::Tcp
            } else {
                banger_helper::DnsProto::Udp
            };
            let r = c.call_blocking(&Request::Helper(HelperOp::BindDns {
                gateway: args[1].parse().unwrap(),
                proto,
            }));
            match r {
                Err(e) => println!("RESULT err {} {}", e.kind(), e),
                Ok((_, mut fds)) => {
                    let fd = fds.pop().unwrap();
                    let addr: nix::sys::socket::SockaddrIn =
                        nix::sys::socket::getsockname(fd.as_raw_fd()).unwrap();
                    println!("RESULT ok {addr}");
                }
            }
        }
        other => panic!("unknown client action {other}"),
    }
}

fn kind(results: &[String]) -> String {
    results[0]
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn strangers_garbage_and_oversized_requests_are_refused() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let h = Helper::start(d.path(), config_in(d.path()));
        let before = links();

        // Another unprivileged user cannot even connect (the socket is the owner's,
        // 0600)...
        let r = h.as_user(STRANGER, &["ping"]);
        assert_eq!(kind(&r), "err unreachable", "{r:?}");
        assert!(r[0].contains("Permission denied"), "{r:?}");
        // ...and were the socket opened to everyone, SO_PEERCRED still refuses them.
        std::fs::set_permissions(
            &h.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        let r = h.as_user(STRANGER, &["ping"]);
        assert_eq!(kind(&r), "err unauthorized", "{r:?}");
        assert!(
            r[0].contains("uid 4343 may not use the banger helper"),
            "{r:?}"
        );
        // The owner and root are served.
        assert_eq!(h.as_user(OWNER, &["ping"]), ["ok"]);
        assert_eq!(h.client().ping().await.unwrap(), env!("CARGO_PKG_VERSION"));
        let net = h.client().network().await.unwrap();
        assert_eq!(
            (net.bridge.as_str(), net.subnet.to_string().as_str()),
            ("banger0", "172.30.0.0/24")
        );

        // Garbage: a refusal per line, the connection stays usable.
        let (replies, _) =
            h.raw(b"garbage\n{\"op\":\"run_shell\",\"cmd\":\"id\"}\n{\"op\":\"ping\"}\n");
        assert_eq!(replies.len(), 3, "{replies:?}");
        for r in &replies[..2] {
            assert!(r.contains("\"kind\":\"bad_request\""), "{r}");
        }
        assert!(replies[2].contains("\"ok\":true"), "{replies:?}");
        // Not UTF-8: refused and closed.
        let (replies, closed) = h.raw(b"{\"op\":\"ping\xff\"}\nmore\n");
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(replies[0].contains("bad_request") && closed, "{replies:?}");
        // Oversized: refused and closed, whatever follows.
        let mut big = vec![b'x'; 70 * 1024];
        big.extend_from_slice(b"\n{\"op\":\"ping\"}\n");
        let (replies, closed) = h.raw(&big);
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(
            replies[0].contains("\"kind\":\"too_long\"") && closed,
            "{replies:?}"
        );

        // A request outside the helper's config, even if well-formed.
        let e = h
            .client()
            .run(PrivOp::EnsureBridge {
                name: "other0".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "not_configured", "{e}");
        let e = h
            .client()
            .run(PrivOp::EnableNat {
                bridge: "banger0".into(),
                subnet: "10.77.0.0/24".parse().unwrap(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "not_configured", "{e}");
        assert_eq!(links(), before, "nothing changed on the host");
        assert!(!sh(&["nft", "list", "tables"]).contains("banger"));
        println!("{}", h.log());
    });
}

#[test]
fn a_foreign_bridge_and_an_overlapping_subnet_are_refused() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        // Docker's bridge, under the name the config asks for.
        sh(&["ip", "link", "add", "docker0", "type", "bridge"]);
        let mut cfg = config_in(d.path());
        cfg.bridge = "docker0".into();
        let mut h = Helper::start(d.path(), cfg);
        let ensure = |name: &str| PrivOp::EnsureBridge {
            name: name.into(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            prefix: 24,
        };
        let e = h.client().run(ensure("docker0")).await.unwrap_err();
        assert_eq!(e.kind(), "foreign_bridge", "{e}");
        assert!(e.to_string().contains("banger did not create it"), "{e}");
        let addrs = sh(&["ip", "-j", "addr", "show", "dev", "docker0"]);
        assert!(!addrs.contains("172.30.0.1"), "docker0 untouched: {addrs}");
        let r = h.as_user(OWNER, &["create_tap", "bgr1", "docker0"]);
        assert_eq!(kind(&r), "err foreign_bridge", "{r:?}");
        h.kill9();

        // A host route into the guest subnet.
        let cfg = config_in(d.path());
        sh(&["ip", "link", "add", "uplink0", "type", "bridge"]);
        sh(&["ip", "link", "set", "uplink0", "up"]);
        sh(&["ip", "route", "add", "172.30.0.0/20", "dev", "uplink0"]);
        let h = Helper::start(d.path(), cfg);
        let before = links();
        let e = h.client().run(ensure("banger0")).await.unwrap_err();
        assert_eq!(e.kind(), "subnet_overlap", "{e}");
        assert!(e.to_string().contains("route 172.30.0.0/20"), "{e}");
        let e = h
            .client()
            .run(PrivOp::EnableNat {
                bridge: "banger0".into(),
                subnet: "172.30.0.0/24".parse().unwrap(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "subnet_overlap", "{e}");
        assert_eq!(links(), before, "no bridge was created");
        assert!(!sh(&["nft", "list", "tables"]).contains("banger"));

        // A host address in it (no route of its own: a /32).
        sh(&["ip", "route", "del", "172.30.0.0/20", "dev", "uplink0"]);
        sh(&["ip", "addr", "add", "172.30.0.77/32", "dev", "uplink0"]);
        let e = h.client().run(ensure("banger0")).await.unwrap_err();
        assert_eq!(e.kind(), "subnet_overlap", "{e}");
        assert!(e.to_string().contains("172.30.0.77/32 on uplink0"), "{e}");
        assert_eq!(links(), before);

        // Once the subnet is free the bridge is made, and NAT goes on.
        sh(&["ip", "addr", "del", "172.30.0.77/32", "dev", "uplink0"]);
        h.client().run(ensure("banger0")).await.unwrap();
        h.client()
            .run(PrivOp::EnableNat {
                bridge: "banger0".into(),
                subnet: "172.30.0.0/24".parse().unwrap(),
            })
            .await
            .unwrap();
        assert!(sh(&["nft", "list", "table", "ip", "banger"]).contains("masquerade"));
        // Its own bridge's route does not count as an overlap on the next start.
        h.client().run(ensure("banger0")).await.unwrap();
        h.client()
            .run(PrivOp::DisableNat {
                bridge: "banger0".into(),
            })
            .await
            .unwrap();
    });
}

#[test]
fn taps_belong_to_the_caller_and_only_the_helpers_are_touched() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let h = Helper::start(d.path(), config_in(d.path()));
        h.client()
            .run(PrivOp::EnsureBridge {
                name: "banger0".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            })
            .await
            .unwrap();
        // The owner's tap is the owner's: SO_PEERCRED, not a request field.
        assert_eq!(
            h.as_user(OWNER, &["create_tap", "bgra1", "banger0"]),
            ["ok"]
        );
        let st = banger_host::link_state("bgra1").await.unwrap().unwrap();
        assert_eq!(st.tap_owner, Some(OWNER));
        assert!(st.is_tap && st.master.as_deref() == Some("banger0"));
        let r = h.as_user(OWNER, &["create_tap", "bgra2", "banger0", "0"]);
        assert_eq!(kind(&r), "err owner_not_caller", "{r:?}");
        let r = h.as_user(OWNER, &["create_tap", "bgra2", "br-other"]);
        assert_eq!(kind(&r), "err not_configured", "{r:?}");
        assert!(!banger_host::link_exists("bgra2").await.unwrap());

        // bgr links the helper did not make: a bridge, a tun device, and a tap made
        // by hand.
        sh(&["ip", "link", "add", "bgrb1", "type", "bridge"]);
        sh(&["ip", "tuntap", "add", "dev", "bgrb3", "mode", "tun"]);
        sh(&["ip", "tuntap", "add", "dev", "bgrb2", "mode", "tap"]);
        let before = links();
        for not_a_tap in ["bgrb1", "bgrb3"] {
            let r = h.as_user(OWNER, &["delete_tap", not_a_tap]);
            assert_eq!(kind(&r), "err not_a_tap", "{r:?}");
            let r = h.as_user(OWNER, &["open_tap", not_a_tap]);
            assert_eq!(kind(&r), "err not_a_tap", "{r:?}");
        }
        let r = h.as_user(OWNER, &["delete_tap", "bgrb2"]);
        assert_eq!(kind(&r), "err not_our_link", "{r:?}");
        let r = h.as_user(OWNER, &["create_tap", "bgrb2", "banger0"]);
        assert_eq!(kind(&r), "err not_our_link", "{r:?}");
        let r = h.as_user(OWNER, &["open_tap", "bgrb2"]);
        assert_eq!(kind(&r), "err not_our_link", "{r:?}");
        // Not even root gets the helper to touch them.
        let e = h
            .client()
            .run(PrivOp::DeleteTap {
                name: "bgrb2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "not_our_link", "{e}");
        let e = h
            .client()
            .run(PrivOp::DeleteTap {
                name: "banger0".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "bad_tap_name", "{e}");
        assert_eq!(links(), before, "nothing was touched");
        let st = banger_host::link_state("bgrb2").await.unwrap().unwrap();
        assert_eq!(st.master, None, "the hand-made tap was not enslaved");

        // Root may delete the owner's tap; deleting twice is fine.
        h.client()
            .run(PrivOp::DeleteTap {
                name: "bgra1".into(),
            })
            .await
            .unwrap();
        assert!(!banger_host::link_exists("bgra1").await.unwrap());
        assert_eq!(h.as_user(OWNER, &["delete_tap", "bgra1"]), ["ok"]);
    });
}

/// Isolation through the helper: a tap's rules only for the caller's own tap and a
/// guest address of the configured subnet; the bridge goes only when empty; and
/// afterwards nothing of banger's is left in the namespace.
#[test]
fn isolation_is_scoped_and_teardown_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let h = Helper::start(d.path(), config_in(d.path()));
        let gw = Ipv4Addr::new(172, 30, 0, 1);
        let root = h.client();
        root.run(PrivOp::EnsureBridge {
            name: "banger0".into(),
            gateway: gw,
            prefix: 24,
        })
        .await
        .unwrap();
        root.run(PrivOp::EnableIsolation {
            bridge: "banger0".into(),
            gateway: gw,
            prefix: 24,
            host_tcp_ports: vec![8080],
        })
        .await
        .unwrap();
        let e = root
            .run(PrivOp::EnableIsolation {
                bridge: "banger0".into(),
                gateway: Ipv4Addr::new(172, 30, 1, 1),
                prefix: 24,
                host_tcp_ports: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "not_configured", "{e}");
        assert_eq!(
            h.as_user(OWNER, &["create_tap", "bgrc1", "banger0"]),
            ["ok"]
        );
        // The gateway, another subnet's address and someone else's tap are refused.
        for ip in ["172.30.0.1", "172.30.1.5", "172.30.0.255"] {
            let r = h.as_user(OWNER, &["isolate_tap", "bgrc1", ip]);
            assert_eq!(kind(&r), "err not_guest_address", "{ip}: {r:?}");
        }
        sh(&["ip", "tuntap", "add", "dev", "bgrc2", "mode", "tap"]);
        let r = h.as_user(OWNER, &["isolate_tap", "bgrc2", "172.30.0.6"]);
        assert_eq!(kind(&r), "err not_our_link", "{r:?}");
        sh(&["ip", "link", "del", "bgrc2"]);
        assert_eq!(
            h.as_user(OWNER, &["isolate_tap", "bgrc1", "172.30.0.5"]),
            ["ok"]
        );
        let rules = sh(&["nft", "list", "table", "bridge", "banger"]);
        assert!(
            rules.contains("tap-bgrc1") && rules.contains("06:ba:ac:1e:00:05"),
            "{rules}"
        );
        let bridge = PrivOp::DeleteBridge {
            name: "banger0".into(),
            gateway: gw,
            prefix: 24,
        };
        let e = root.run(bridge.clone()).await.unwrap_err();
        assert!(e.to_string().contains("bgrc1"), "{e}");
        assert_eq!(h.as_user(OWNER, &["delete_tap", "bgrc1"]), ["ok"]);
        root.run(bridge).await.unwrap();
        root.run(PrivOp::DisableIsolation {
            bridge: "banger0".into(),
        })
        .await
        .unwrap();
        assert_eq!(sh(&["nft", "list", "ruleset"]).trim(), "");
        assert!(!banger_host::link_exists("banger0").await.unwrap());
    });
}

#[test]
fn a_killed_helper_keeps_its_record_of_taps() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let mut h = Helper::start(d.path(), config_in(d.path()));
        h.client()
            .run(PrivOp::EnsureBridge {
                name: "banger0".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            })
            .await
            .unwrap();
        for t in ["bgrc1", "bgrc2"] {
            assert_eq!(h.as_user(OWNER, &["create_tap", t, "banger0"]), ["ok"]);
        }
        h.kill9();
        assert!(
            banger_host::link_exists("bgrc1").await.unwrap(),
            "taps outlive the helper"
        );
        h.spawn();
        let taps = h.client().list_taps().await.unwrap();
        let names: Vec<&str> = taps.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["bgrc1", "bgrc2"]);
        assert!(taps
            .iter()
            .all(|t| t.owner_uid == OWNER && t.ifindex.is_some()));
        // Still the owner's: a stranger's root-free request never got here anyway,
        // and the owner can delete them after the restart.
        for t in ["bgrc1", "bgrc2"] {
            assert_eq!(h.as_user(OWNER, &["delete_tap", t]), ["ok"]);
            assert!(!banger_host::link_exists(t).await.unwrap());
        }
        assert!(h.client().list_taps().await.unwrap().is_empty());
        // A tap deleted behind the helper's back is forgotten on the next start.
        assert_eq!(
            h.as_user(OWNER, &["create_tap", "bgrc3", "banger0"]),
            ["ok"]
        );
        h.kill9();
        sh(&["ip", "link", "del", "bgrc3"]);
        h.spawn();
        assert!(h.client().list_taps().await.unwrap().is_empty());
    });
}

#[test]
fn an_unprivileged_process_gets_a_usable_tap_descriptor() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let h = Helper::start(d.path(), config_in(d.path()));
        h.client()
            .run(PrivOp::EnsureBridge {
                name: "banger0".into(),
                gateway: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24,
            })
            .await
            .unwrap();
        assert_eq!(
            h.as_user(OWNER, &["create_tap", "bgrd1", "banger0"]),
            ["ok"]
        );
        let tun_mode = std::fs::metadata("/dev/net/tun")
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0);
        if tun_mode & 0o006 == 0 {
            // As on our machines: the owner cannot open /dev/net/tun itself.
            let r = h.as_user(OWNER, &["open_dev_net_tun"]);
            assert_eq!(r, ["err permission denied"], "/dev/net/tun is {tun_mode:o}");
        }
        let rx = rx_packets("bgrd1");
        let r = h.as_user(OWNER, &["open_tap", "bgrd1"]);
        assert_eq!(
            r,
            ["ok bgrd1 70"],
            "TUNGETIFF names the tap and a frame was written"
        );
        assert_eq!(rx_packets("bgrd1"), rx + 1, "the kernel received the frame");
        // Nobody else gets it, even through a world-writable socket.
        std::fs::set_permissions(
            &h.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        let r = h.as_user(STRANGER, &["open_tap", "bgrd1"]);
        assert_eq!(kind(&r), "err unauthorized", "{r:?}");
        // Root through the trait, as the daemon will call it.
        let fd = h.client().open_tap("bgrd1").await.unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        // While it is held, the tap is busy for a second opener.
        let e = h.client().open_tap("bgrd1").await.unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(fd);
        h.client().open_tap("bgrd1").await.unwrap();
    });
}

#[test]
fn the_owner_gets_the_gateways_dns_port_and_nothing_else() {
    if !root_or_skip() {
        return;
    }
    in_netns(|| async {
        let d = public_tempdir();
        let h = Helper::start(d.path(), config_in(d.path()));
        // Port 53 is privileged: the owner cannot bind it itself; through the helper
        // it gets bound sockets on the configured gateway, before the bridge exists.
        for proto in ["udp", "tcp"] {
            let r = h.as_user(OWNER, &["bind_dns", "172.30.0.1", proto]);
            assert_eq!(r, ["ok 172.30.0.1:53"], "{proto}");
        }
        // Another address (a host address, loopback) is refused.
        for other in ["127.0.0.1", "172.30.0.2", "10.0.0.1"] {
            let r = h.as_user(OWNER, &["bind_dns", other, "udp"]);
            assert_eq!(kind(&r), "err not_configured", "{other}: {r:?}");
        }
        // Nobody else, even through a world-writable socket.
        std::fs::set_permissions(
            &h.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        let r = h.as_user(STRANGER, &["bind_dns", "172.30.0.1", "udp"]);
        assert_eq!(kind(&r), "err unauthorized", "{r:?}");
        // Root through the trait, as a daemon calls it: a listening TCP socket.
        let fd = h
            .client()
            .bind_dns(Ipv4Addr::new(172, 30, 0, 1), banger_helper::DnsProto::Tcp)
            .await
            .unwrap();
        let l = std::net::TcpListener::from(fd);
        assert_eq!(l.local_addr().unwrap().to_string(), "172.30.0.1:53");
    });
}
