//! Issue 19's daemon side with the fake host parts: a VM's published ports follow its
//! state (listening while it runs, closed when it stops, back after a start), and `vm
//! show` of a VM that booted in an earlier call carries that boot's stages and uptime.

use super::fakes::app_with;
use super::{create_vm, sink};
use crate::vm::{boot_record, forward, query, start, stop};
use banger_model::PortForward;
use banger_rpc::PortForwardParams;
use std::net::Ipv4Addr;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

#[tokio::test]
async fn published_ports_follow_the_vm() {
    let (_d, app, _world) = app_with(|_| {});
    create_vm(&app, "dev").await.unwrap();
    let port = free_port();
    let f = PortForward {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port: port,
        guest_port: 80,
    };
    let p = |remove| PortForwardParams {
        name: "dev".into(),
        forward: f,
        remove,
    };
    let shown = forward::port_forward(&app, p(false)).await.unwrap();
    assert_eq!(shown.ports, [f]);
    assert!(listening(port), "a running VM's port is listened on");
    // Twice is refused; so is a port another VM publishes.
    assert!(forward::port_forward(&app, p(false)).await.is_err());

    stop::stop(&app, "op-s", "dev", &sink()).await.unwrap();
    forward::close(&app, "dev");
    // Closing is asynchronous (the task is aborted at its next poll).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!listening(port), "a stopped VM's port is closed");
    assert_eq!(
        query::show(&app, "dev").unwrap().ports,
        [f],
        "kept with the VM"
    );

    let again = start::start_vm(&app, "op-t", "dev", &sink()).await.unwrap();
    forward::sync_info(&app, &again);
    assert!(listening(port), "listened on again after a start");

    forward::port_forward(&app, p(true)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!listening(port), "withdrawn");
    assert!(query::show(&app, "dev").unwrap().ports.is_empty());
    assert!(
        forward::port_forward(&app, p(true)).await.is_err(),
        "nothing to withdraw"
    );
}

#[tokio::test]
async fn show_carries_the_last_boot() {
    let (_d, app, _world) = app_with(|_| {});
    let mut info = create_vm(&app, "dev").await.unwrap();
    boot_record::after_boot(&app, &mut info);
    assert!(info.started_at.is_some());
    let shown = query::show(&app, "dev").unwrap();
    assert!(!shown.timings.is_empty(), "timings of the boot");
    assert_eq!(shown.started_at, info.started_at);
    stop::kill(&app, "dev").await.unwrap();
    let shown = query::show(&app, "dev").unwrap();
    assert_eq!(shown.started_at, None, "no uptime when stopped");
    assert!(!shown.timings.is_empty(), "the last boot's stages stay");
}
