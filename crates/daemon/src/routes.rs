//! The method table: each RPC method type → its service call. This is where service
//! errors ([`DaemonError`]) become the wire's `RpcError` (through `Router::add` and
//! `From<DaemonError> for RpcError`), and where long calls register in the operations
//! list. A test pins the table against the protocol's method list.

use crate::app::App;
use crate::error::DaemonError;
use crate::{catalog, flatten, images, kernels, vm, warm};
use banger_rpc::{
    CallCtx, CatalogList, EventsWatch, ImageBuild, ImageCachePrune, ImageDelete, ImageList,
    ImagePromote, ImagePull, ImageRegister, ImageShow, ImageWarm, ImageWarmList, ImageWarmRm,
    KernelDelete, KernelImport, KernelList, KernelPull, KernelShow, NetworkDown, NetworkShow,
    OperationsList, Ping, PingResult, Router, RouterError, SshConfig, SshConfigInfo, VmCreate,
    VmDelete, VmExec, VmHostKey, VmInfo, VmKill, VmList, VmLogs, VmPortForward, VmPorts, VmPrune,
    VmRestart, VmSet, VmShow, VmSshInfo, VmStart, VmStats, VmStop, VmWorkspaceRecord, WarmRmResult,
};
use std::sync::Arc;

/// `route!(router, app, Method, |app, ctx, params| body)`: register `body` (a
/// `Result<Method::Result, DaemonError>` expression, awaited inside) as the handler
/// of `Method`, with its own clone of the app.
macro_rules! route {
    ($r:ident, $app:ident, $m:expr, |$a:ident, $c:pat_param, $p:pat_param| $body:expr) => {{
        let app = Arc::clone(&$app);
        $r.add($m, move |$c: CallCtx, $p| {
            let $a = Arc::clone(&app);
            async move {
                let r: Result<_, DaemonError> = $body;
                r
            }
        })?;
    }};
}

/// The VM shape a warm call names, the daemon's defaults filling the gaps.
fn warm_shape(app: &App, p: &banger_rpc::ImageWarmParams) -> Result<warm::Shape, DaemonError> {
    let shape = warm::Shape {
        cpus: p.cpus.unwrap_or(app.config.default_cpus),
        memory_mib: p.memory_mib.unwrap_or(app.config.default_memory_mib),
        disk_mib: p.disk_mib.unwrap_or(app.config.default_disk_mib),
        init: p.init.unwrap_or_default(),
    };
    vm::check_sizes(shape.cpus, shape.memory_mib, shape.disk_mib)?;
    Ok(shape)
}

/// A call that may have booted the VM: remember the boot for `vm show`, and listen
/// on its published ports.
fn booted(app: &App, mut info: VmInfo) -> VmInfo {
    vm::boot_record::after_boot(app, &mut info);
    vm::forward::sync_info(app, &info);
    info
}

/// A call that stopped the VM (or failed to): its published ports follow its state.
fn settled(app: &App, info: VmInfo) -> VmInfo {
    vm::forward::sync_info(app, &info);
    info
}

/// Build the router over `app`.
pub fn router(app: Arc<App>) -> Result<Router, RouterError> {
    let mut r = Router::new();
    route!(r, app, Ping, |_a, _c, _p| Ok(PingResult {
        version: banger_buildinfo::VERSION.to_string(),
        pid: std::process::id(),
    }));
    route!(r, app, OperationsList, |a, _c, _p| Ok(a.ops.list()));
    route!(r, app, EventsWatch, |a, c, _p| Ok(crate::events::watch(
        &a, &c
    )));

    // Host networking, ssh files, host keys.
    route!(r, app, NetworkShow, |a, _c, _p| crate::network::show(&a)
        .await);
    route!(r, app, NetworkDown, |a, _c, _p| crate::network::down(&a)
        .await);
    route!(r, app, SshConfig, |a, _c, _p| {
        crate::ssh_files::refresh(&a);
        let path = a.layout.ssh_config();
        let config = std::fs::read_to_string(&path).map_err(DaemonError::io("reading", &path))?;
        Ok(SshConfigInfo {
            config_path: path,
            known_hosts_path: a.layout.known_hosts(),
            config,
        })
    });
    route!(r, app, VmHostKey, |a, _c, p| vm::host_key::host_key(&a, p)
        .await);

    // VMs.
    route!(r, app, VmCreate, |a, c, p| {
        // A host port that is taken is refused before anything is made; the
        // mappings are stored with the VM's record (create::create).
        vm::forward::check_new(&p.ports, &[])?;
        let info = vm::create::create(&a, &c.op_id, p, &c.progress).await?;
        Ok(booted(&a, info))
    });
    route!(r, app, VmStart, |a, c, p| vm::start::start_vm(
        &a,
        &c.op_id,
        &p.name,
        &c.progress
    )
    .await
    .map(|i| booted(&a, i)));
    route!(r, app, VmStop, |a, c, p| vm::stop::stop(
        &a,
        &c.op_id,
        &p.name,
        &c.progress
    )
    .await
    .map(|i| settled(&a, i)));
    route!(r, app, VmRestart, |a, c, p| vm::stop::restart(
        &a,
        &c.op_id,
        &p.name,
        &c.progress
    )
    .await
    .map(|i| booted(&a, i)));
    route!(r, app, VmKill, |a, _c, p| vm::stop::kill(&a, &p.name)
        .await
        .map(|i| settled(&a, i)));
    route!(r, app, VmDelete, |a, _c, p| {
        let name = p.name.clone();
        vm::delete::delete(&a, p).await?;
        vm::forward::close(&a, &name);
        Ok(())
    });
    route!(r, app, VmPortForward, |a, _c, p| vm::forward::port_forward(
        &a, p
    )
    .await);
    route!(r, app, VmPrune, |a, _c, _p| vm::delete::prune(&a).await);
    route!(r, app, VmSet, |a, _c, p| vm::set::set(&a, p).await);
    route!(r, app, VmList, |a, _c, _p| vm::query::list(&a));
    route!(r, app, VmShow, |a, _c, p| vm::query::show(&a, &p.name));
    route!(r, app, VmSshInfo, |a, _c, p| vm::query::ssh_info(
        &a, &p.name
    ));
    route!(r, app, VmLogs, |a, _c, p| vm::query::logs(&a, p));
    route!(r, app, VmPorts, |a, _c, p| vm::query::ports(&a, &p.name)
        .await);
    route!(r, app, VmWorkspaceRecord, |a, _c, p| {
        vm::query::record_workspace(&a, p).await
    });
    route!(r, app, VmExec, |a, c, p| vm::exec::exec(&a, &c, p).await);
    route!(r, app, VmStats, |a, _c, p| vm::stats::stats(&a, &p.name)
        .await);

    // Images and the catalog.
    route!(r, app, ImageBuild, |a, c, p| {
        let target = p.name.clone().unwrap_or_else(|| "debian".into());
        let _op = a.ops.begin(&c.op_id, "image.build", &target);
        images::build(&a, p.name, p.release, p.packages, &c.progress, false).await
    });
    route!(r, app, ImagePull, |a, c, p| {
        let _op = a.ops.begin(&c.op_id, "image.pull", &p.reference.clone());
        images::pull(&a, p, &c.progress).await
    });
    route!(r, app, ImagePromote, |a, c, p| {
        let _op = a.ops.begin(&c.op_id, "image.promote", &p.name.clone());
        flatten::promote(&a, p, &c.progress).await
    });
    route!(r, app, ImageRegister, |a, c, p| {
        let _op = a.ops.begin(&c.op_id, "image.register", &p.name.clone());
        flatten::register(&a, p, &c.progress).await
    });
    route!(r, app, ImageCachePrune, |a, _c, p| images::cache_prune(
        &a, p.dry_run
    )
    .await);
    route!(r, app, ImageDelete, |a, _c, p| images::delete(&a, &p.name)
        .await);
    route!(r, app, ImageShow, |a, _c, p| images::show(&a, &p.name));
    route!(r, app, ImageList, |a, _c, _p| images::list(&a));
    route!(r, app, CatalogList, |a, _c, _p| catalog::listing(&a).await);

    // Warm snapshots.
    route!(r, app, ImageWarm, |a, c, p| {
        let image = a.db(|s| s.get_image_by_name(&p.name))?;
        let shape = warm_shape(&a, &p)?;
        warm::make::warm(&a, &c.op_id, &image, shape, &c.progress).await
    });
    route!(r, app, ImageWarmList, |a, _c, _p| warm::list(&a).await);
    route!(r, app, ImageWarmRm, |a, _c, p| {
        let shape = if p.names_a_shape() {
            Some(warm_shape(&a, &p)?)
        } else {
            None
        };
        warm::remove(&a, &p.name, shape)
            .await
            .map(|removed| WarmRmResult { removed })
    });

    // Kernels.
    route!(r, app, KernelImport, |a, c, p| {
        let target = p.path.display().to_string();
        let _op = a.ops.begin(&c.op_id, "kernel.import", &target);
        kernels::import(&a, p, &c.progress).await
    });
    route!(r, app, KernelPull, |a, c, p| {
        let _op = a.ops.begin(&c.op_id, "kernel.pull", &p.name);
        catalog::pull_kernel(&a, &p.name, &c.progress).await
    });
    route!(r, app, KernelList, |a, _c, _p| kernels::list(&a));
    route!(r, app, KernelShow, |a, _c, p| kernels::show(&a, &p.name));
    route!(r, app, KernelDelete, |a, _c, p| kernels::delete(
        &a, &p.name
    ));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_rpc::METHODS;

    #[test]
    fn method_table_matches_the_protocol() {
        let (_dir, app) = crate::vm::tests::fakes::app();
        let r = router(app).unwrap();
        assert_eq!(r.methods(), METHODS);
    }
}
