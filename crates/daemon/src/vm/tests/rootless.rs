//! Rootless mode (issue 17, docs/rootless.md) with fake host parts: no privileged
//! operation at all, the VM attached to QEMU's user-mode stack with its published
//! ports and a loopback ssh port, and `vm port-forward` refused while it runs.

use super::fakes::{app_full, Fail};
use super::*;
use crate::vm::forward;
use crate::vm::userspace::{self, UserNet};
use banger_model::PortForward;
use banger_vmm::NetBackend;

#[tokio::test]
async fn a_rootless_start_needs_no_privilege_and_forwards_ports_and_ssh() {
    let (_d, app, world) = app_full(|_| {}, Some(UserNet::User));
    // Every privileged operation would fail: none may be asked for.
    world.fail(Fail::NoPrivilege);
    let fwd = PortForward {
        host_ip: std::net::Ipv4Addr::LOCALHOST,
        host_port: 18080,
        guest_port: 8080,
    };
    let info = create::create(
        &app,
        "op-web",
        VmCreateParams {
            ports: vec![fwd],
            ..params("web")
        },
        &sink(),
    )
    .await
    .unwrap();
    assert_eq!(info.state, VmState::Running);
    assert!(world.taps().is_empty(), "no tap: {:?}", world.taps());
    let (_, rt) = dirs(&app, "web");
    let ssh = userspace::ssh_port(&rt).expect("an ssh port is recorded");
    assert_eq!(info.ssh_port, Some(ssh));
    let nets = world.nets();
    let net = nets.last().unwrap().as_ref().unwrap();
    match &net.backend {
        NetBackend::User {
            host,
            forwards,
            dns,
            ..
        } => {
            assert_eq!(*host, app.config.subnet.gateway());
            assert_ne!(dns, host);
            let mut pairs: Vec<(u16, u16)> = forwards
                .iter()
                .map(|f| (f.host_port, f.guest_port))
                .collect();
            pairs.sort_unstable();
            let mut want = vec![(18080, 8080), (ssh, 22)];
            want.sort_unstable();
            assert_eq!(pairs, want);
            assert!(forwards.iter().all(|f| f.guest_ip == info.ip));
        }
        other => panic!("{other:?}"),
    }
    assert!(!net.unplugged);
    // ssh goes to the loopback port.
    let si = query::ssh_info(&app, "web").unwrap();
    assert_eq!((si.ip, si.port), (std::net::Ipv4Addr::LOCALHOST, Some(ssh)));
    // Published ports cannot change under a running stack.
    let e = forward::port_forward(
        &app,
        banger_rpc::PortForwardParams {
            name: "web".into(),
            forward: PortForward {
                host_port: 18081,
                ..fwd
            },
            remove: false,
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("stop it"), "{e}");
    assert_eq!(forward::load(&app, &info.id), vec![fwd]);
    // Stopped, the ssh port is gone with the runtime directory.
    stop::stop(&app, "op-stop", "web", &sink()).await.unwrap();
    assert_eq!(userspace::ssh_port(&rt), None);
    assert_eq!(query::show(&app, "web").unwrap().ssh_port, None);
}
