//! `network.show` and `network.down`: what banger set up on the host for guests, and
//! removing all of it.
//!
//! The bridge, banger's nftables tables (NAT and isolation) and the bridge's
//! systemd-resolved settings stay while the daemon runs (one VM start sets up what is
//! missing). `network down` removes them, once no VM runs: every VM's tap and its
//! rules went when it stopped, so afterwards no banger link, address, route, rule or
//! resolver setting is left on the host.

use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_helper::PrivOp;
use banger_model::VmState;
use banger_rpc::{NetworkDownResult, NetworkInfo};
use std::sync::atomic::Ordering;

/// `network.show`.
pub async fn show(app: &App) -> Result<NetworkInfo> {
    let c = &app.config;
    let bridge_up = banger_host::link_exists(&c.bridge).await.unwrap_or(false);
    let mut names: Vec<String> = app
        .db(|s| s.list_vms())?
        .into_iter()
        .filter(|r| app.dns.names.get(r.name.as_str()).is_some())
        .map(|r| crate::ssh_files::alias(r.name.as_str()))
        .collect();
    names.sort();
    Ok(NetworkInfo {
        bridge: c.bridge.clone(),
        subnet: c.subnet.to_string(),
        gateway: c.subnet.gateway().to_string(),
        bridge_up,
        dns_host: app.dns.host_listener().describe(),
        dns_guests: app.dns.guest_listener().describe(),
        upstreams: app
            .dns
            .upstreams()
            .iter()
            .map(ToString::to_string)
            .collect(),
        names,
        isolation: c.isolation,
        guest_host_ports: c.guest_host_ports.clone(),
        nat: c.nat,
        ssh_config: app.layout.ssh_config(),
        known_hosts: app.layout.known_hosts(),
    })
}

/// `network.down`: refused while any VM runs or boots.
pub async fn down(app: &App) -> Result<NetworkDownResult> {
    let busy: Vec<String> = app
        .db(|s| s.list_vms())?
        .into_iter()
        .filter(|r| matches!(r.state, VmState::Running | VmState::Creating))
        .map(|r| r.name.to_string())
        .collect();
    if !busy.is_empty() {
        return Err(DaemonError::BadRequest(format!(
            "VMs still run on the bridge ({}); stop them first (banger vm stop {})",
            busy.join(", "),
            busy.join(" ")
        )));
    }
    if app.rootless.is_some() {
        // Rootless mode sets up nothing on the host: each VM's passt went with it.
        return Ok(NetworkDownResult {
            removed: vec!["nothing: rootless mode sets up no bridge, tap or nftables table".into()],
        });
    }
    let c = &app.config;
    let mut removed = vec![];
    app.privileged
        .run(PrivOp::DeleteBridge {
            name: c.bridge.clone(),
            gateway: c.subnet.gateway(),
            prefix: c.subnet.prefix,
        })
        .await
        .map_err(DaemonError::host(format!("removing bridge {}", c.bridge)))?;
    removed.push(format!(
        "bridge {} ({} and its route; its systemd-resolved settings)",
        c.bridge,
        c.subnet.gateway()
    ));
    app.privileged
        .run(PrivOp::DisableIsolation {
            bridge: c.bridge.clone(),
        })
        .await
        .map_err(DaemonError::host("removing the isolation tables"))?;
    app.isolation_ready.store(false, Ordering::Relaxed);
    removed.push(format!(
        "nftables tables bridge {} and inet {}",
        banger_host::BRIDGE_TABLE,
        banger_host::GUARD_TABLE
    ));
    app.privileged
        .run(PrivOp::DisableNat {
            bridge: c.bridge.clone(),
        })
        .await
        .map_err(DaemonError::host("removing the NAT table"))?;
    app.nat_ready.store(false, Ordering::Relaxed);
    removed.push(format!("nftables table ip {}", banger_host::NAT_TABLE));
    tracing::info!(bridge = %c.bridge, "host networking removed (network down)");
    Ok(NetworkDownResult { removed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn down_is_refused_while_a_vm_runs_then_removes_everything() {
        let (_d, app, world) = crate::vm::tests::fakes::app_with(|_| {});
        let p = banger_rpc::VmCreateParams {
            name: Some(banger_model::VmName::parse("dev").unwrap()),
            ..Default::default()
        };
        crate::vm::create::create(&app, "op", p, &banger_rpc::ProgressSink::detached())
            .await
            .unwrap();
        let e = down(&app).await.unwrap_err();
        assert!(e.to_string().contains("banger vm stop dev"), "{e}");
        crate::vm::stop::kill(&app, "dev").await.unwrap();
        world.clear_log();
        let r = down(&app).await.unwrap();
        assert_eq!(r.removed.len(), 3);
        assert_eq!(
            world.log(),
            ["delete-bridge banger0", "isolation-off", "nat-off"]
        );
        // The next start sets everything up again.
        world.clear_log();
        crate::vm::start::start_vm(&app, "op2", "dev", &banger_rpc::ProgressSink::detached())
            .await
            .unwrap();
        let log = world.log();
        assert!(log.contains(&"nat".to_string()) && log.contains(&"isolation".to_string()));
    }
}
