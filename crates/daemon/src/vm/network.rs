//! The `network` start step and what it sets up once per daemon: the bridge,
//! outbound NAT, guest isolation and the guests' DNS listener, then the VM's own tap
//! with rules that let it send only as itself.
//!
//! NAT is best effort (guests without it still reach the host and each other);
//! isolation is not: a VM whose tap cannot be isolated does not start, unless
//! `BANGER_ISOLATION=off` says the user runs guests unisolated on purpose.

use super::stages::{Steps, Undo};
use super::userspace::{Attachment, UserNet};
use crate::app::App;
use crate::error::{DaemonError, Result};
use banger_helper::PrivOp;
use banger_model::VmRecord;
use banger_rpc::ProgressSink;
use std::sync::atomic::Ordering;

/// The `network` step: the bridge, NAT and isolation (once per daemon), the guests'
/// DNS listener, then the VM's tap and its rules. Returns the tap's name.
pub(crate) async fn network(
    app: &App,
    rec: &VmRecord,
    steps: &mut Steps<'_>,
) -> Result<Attachment> {
    if let Some(net) = &app.rootless {
        say_rootless_once(app, net, steps.progress());
        let rt_dir = app.layout.vm_runtime(&rec.id);
        return super::userspace::attach(app, net, rec, &rt_dir);
    }
    tap(app, rec, steps).await.map(Attachment::Tap)
}

/// Rootless mode is said once per state directory, at the first VM start (then
/// `banger doctor` shows it): what it means and how to get the bridge instead.
fn say_rootless_once(app: &App, net: &UserNet, progress: &ProgressSink) {
    let marker = app.layout.state.join("rootless-noted");
    if marker.exists() {
        return;
    }
    progress.send(
        "note",
        Some(format!(
            "banger runs rootless (no root helper): guests reach out through {}; commands \
             and files go through the agent, published ports (-p) and ssh through loopback \
             ports. For a bridge with <vm>.vm names run: sudo banger system install (see docs/rootless.md)",
            net.describe()
        )),
    );
    if let Err(e) = std::fs::write(&marker, b"") {
        tracing::debug!("recording that rootless mode was said: {e}");
    }
}

/// The bridge, NAT, isolation and the VM's tap; returns the tap's name.
async fn tap(app: &App, rec: &VmRecord, steps: &mut Steps<'_>) -> Result<String> {
    let subnet = app.config.subnet;
    let bridge = app.config.bridge.clone();
    app.privileged
        .run(PrivOp::EnsureBridge {
            name: bridge.clone(),
            gateway: subnet.gateway(),
            prefix: subnet.prefix,
        })
        .await
        .map_err(DaemonError::host(format!("setting up bridge {bridge}")))?;
    ensure_nat(app, &bridge, steps.progress()).await;
    ensure_isolation(app).await?;
    app.dns.refresh_upstreams();
    app.dns
        .ensure_guests(app.privileged.as_ref(), subnet.gateway())
        .await;
    let tap = banger_host::tap_name(&rec.id);
    app.privileged
        .run(PrivOp::CreateTap {
            name: tap.clone(),
            bridge,
            owner_uid: None,
        })
        .await
        .map_err(DaemonError::host(format!("creating tap {tap}")))?;
    steps.created(Undo::DeleteTap(tap.clone()));
    if app.config.isolation {
        app.privileged
            .run(PrivOp::IsolateTap {
                name: tap.clone(),
                ip: rec.ip,
            })
            .await
            .map_err(DaemonError::host(format!(
                "isolating tap {tap} (set BANGER_ISOLATION=off to run guests without isolation)"
            )))?;
    }
    Ok(tap)
}

/// Outbound NAT for the guest subnet, once per daemon. A failure (no nft, a host
/// firewall banger cannot change) costs guests their way out, not their start: the
/// VM still boots and reaches the host, and the reason is shown once.
async fn ensure_nat(app: &App, bridge: &str, progress: &ProgressSink) {
    if !app.config.nat || app.nat_ready.load(Ordering::Relaxed) {
        return;
    }
    let op = PrivOp::EnableNat {
        bridge: bridge.to_string(),
        subnet: app.config.subnet,
    };
    match app.privileged.run(op).await {
        Ok(()) => {
            app.nat_ready.store(true, Ordering::Relaxed);
            tracing::info!(bridge, subnet = %app.config.subnet, "outbound NAT enabled");
        }
        Err(e) => {
            tracing::warn!("outbound NAT could not be enabled: {e}");
            progress.send(
                "network",
                Some(format!(
                    "outbound NAT could not be enabled ({e}); guests reach only the host (set BANGER_NAT=off to stop trying, run banger doctor)"
                )),
            );
        }
    }
}

/// Guest isolation, once per daemon (and again after `banger network down`).
pub(crate) async fn ensure_isolation(app: &App) -> Result<()> {
    if !app.config.isolation || app.isolation_ready.load(Ordering::Relaxed) {
        return Ok(());
    }
    let subnet = app.config.subnet;
    app.privileged
        .run(PrivOp::EnableIsolation {
            bridge: app.config.bridge.clone(),
            gateway: subnet.gateway(),
            prefix: subnet.prefix,
            host_tcp_ports: app.config.guest_host_ports.clone(),
        })
        .await
        .map_err(DaemonError::host(
            "setting up guest isolation (set BANGER_ISOLATION=off to run guests without it)",
        ))?;
    app.isolation_ready.store(true, Ordering::Relaxed);
    tracing::info!(
        bridge = %app.config.bridge,
        host_tcp_ports = ?app.config.guest_host_ports,
        "guest isolation enabled"
    );
    Ok(())
}

/// A running VM re-adopted by a new daemon: its tap's rules again (nftables may have
/// been flushed meanwhile; the rules are idempotent).
pub(crate) async fn reisolate(app: &App, rec: &VmRecord) {
    if !app.config.isolation || app.rootless.is_some() {
        return;
    }
    let tap = banger_host::tap_name(&rec.id);
    let r = match ensure_isolation(app).await {
        Ok(()) => app
            .privileged
            .run(PrivOp::IsolateTap {
                name: tap.clone(),
                ip: rec.ip,
            })
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = r {
        tracing::warn!(vm = %rec.name, tap, "re-isolating a re-adopted VM failed: {e}");
    }
}
