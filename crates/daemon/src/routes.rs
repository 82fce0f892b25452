//! The method table: RPC method name → service call. A test pins the list.

use crate::app::App;
use crate::{catalog, flatten, images, kernels, vms};
use banger_rpc::{
    methods as m, CachePruneParams, CallCtx, ImageBuildParams, ImageNameParams, ImagePromoteParams,
    ImagePullParams, ImageRegisterParams, KernelImportParams, KernelNameParams, NoParams,
    PingResult, Router, RouterError, VmCreateParams, VmDeleteParams, VmLogsParams, VmNameParams,
    VmSetParams, WorkspaceParams,
};
use std::sync::Arc;

/// Build the router over `app`.
pub fn router(app: Arc<App>) -> Result<Router, RouterError> {
    let mut r = Router::new();
    r.add(m::PING, |_c: CallCtx, _p: NoParams| async {
        Ok(PingResult {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
        })
    })?;
    let a = app.clone();
    r.add(m::VM_CREATE, move |c: CallCtx, p: VmCreateParams| {
        let a = a.clone();
        async move { vms::create(&a, &c.op_id, p, &c.progress).await }
    })?;
    let a = app.clone();
    r.add(m::VM_START, move |c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::start_vm(&a, &c.op_id, &p.name, &c.progress).await }
    })?;
    let a = app.clone();
    r.add(m::VM_STOP, move |c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::stop(&a, &c.op_id, &p.name, &c.progress).await }
    })?;
    let a = app.clone();
    r.add(m::VM_RESTART, move |c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::restart(&a, &c.op_id, &p.name, &c.progress).await }
    })?;
    let a = app.clone();
    r.add(m::VM_KILL, move |_c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::kill(&a, &p.name).await }
    })?;
    let a = app.clone();
    r.add(m::VM_PRUNE, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { vms::prune(&a).await }
    })?;
    let a = app.clone();
    r.add(m::VM_SET, move |_c: CallCtx, p: VmSetParams| {
        let a = a.clone();
        async move { vms::set(&a, p).await }
    })?;
    let a = app.clone();
    r.add(m::VM_LOGS, move |_c: CallCtx, p: VmLogsParams| {
        let a = a.clone();
        async move { vms::logs(&a, p) }
    })?;
    let a = app.clone();
    r.add(m::VM_STATS, move |_c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::stats(&a, &p.name).await }
    })?;
    let a = app.clone();
    r.add(m::VM_PORTS, move |_c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::ports(&a, &p.name).await }
    })?;
    let a = app.clone();
    r.add(
        m::VM_WORKSPACE_RECORD,
        move |_c: CallCtx, p: WorkspaceParams| {
            let a = a.clone();
            async move { vms::record_workspace(&a, p).await }
        },
    )?;
    let a = app.clone();
    r.add(m::OPERATIONS_LIST, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { Ok(a.ops.list()) }
    })?;
    let a = app.clone();
    r.add(m::VM_LIST, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { vms::list(&a) }
    })?;
    let a = app.clone();
    r.add(m::VM_SHOW, move |_c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::show(&a, &p.name) }
    })?;
    let a = app.clone();
    r.add(m::VM_DELETE, move |_c: CallCtx, p: VmDeleteParams| {
        let a = a.clone();
        async move { vms::delete(&a, p).await }
    })?;
    let a = app.clone();
    r.add(m::VM_SSH_INFO, move |_c: CallCtx, p: VmNameParams| {
        let a = a.clone();
        async move { vms::ssh_info(&a, &p.name) }
    })?;
    let a = app.clone();
    r.add(m::IMAGE_BUILD, move |c: CallCtx, p: ImageBuildParams| {
        let a = a.clone();
        async move {
            let target = p.name.clone().unwrap_or_else(|| "debian".into());
            let _op = a.ops.begin(&c.op_id, "image.build", &target);
            images::build(&a, p.name, p.release, p.packages, &c.progress, false).await
        }
    })?;
    let a = app.clone();
    r.add(m::IMAGE_PULL, move |c: CallCtx, p: ImagePullParams| {
        let a = a.clone();
        async move {
            let target = p.reference.clone();
            let _op = a.ops.begin(&c.op_id, "image.pull", &target);
            images::pull(&a, p, &c.progress).await
        }
    })?;
    let a = app.clone();
    r.add(
        m::IMAGE_PROMOTE,
        move |c: CallCtx, p: ImagePromoteParams| {
            let a = a.clone();
            async move {
                let _op = a.ops.begin(&c.op_id, "image.promote", &p.name);
                flatten::promote(&a, p, &c.progress).await
            }
        },
    )?;
    let a = app.clone();
    r.add(
        m::IMAGE_REGISTER,
        move |c: CallCtx, p: ImageRegisterParams| {
            let a = a.clone();
            async move {
                let _op = a.ops.begin(&c.op_id, "image.register", &p.name);
                flatten::register(&a, p, &c.progress).await
            }
        },
    )?;
    let a = app.clone();
    r.add(
        m::IMAGE_CACHE_PRUNE,
        move |_c: CallCtx, p: CachePruneParams| {
            let a = a.clone();
            async move { images::cache_prune(&a, p.dry_run).await }
        },
    )?;
    let a = app.clone();
    r.add(m::CATALOG_LIST, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { catalog::listing(&a).await }
    })?;
    let a = app.clone();
    r.add(
        m::KERNEL_IMPORT,
        move |c: CallCtx, p: KernelImportParams| {
            let a = a.clone();
            async move {
                let target = p.path.display().to_string();
                let _op = a.ops.begin(&c.op_id, "kernel.import", &target);
                kernels::import(&a, p, &c.progress).await
            }
        },
    )?;
    let a = app.clone();
    r.add(m::KERNEL_PULL, move |c: CallCtx, p: KernelNameParams| {
        let a = a.clone();
        async move {
            let _op = a.ops.begin(&c.op_id, "kernel.pull", &p.name);
            catalog::pull_kernel(&a, &p.name, &c.progress).await
        }
    })?;
    let a = app.clone();
    r.add(m::KERNEL_LIST, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { kernels::list(&a) }
    })?;
    let a = app.clone();
    r.add(m::KERNEL_SHOW, move |_c: CallCtx, p: KernelNameParams| {
        let a = a.clone();
        async move { kernels::show(&a, &p.name) }
    })?;
    let a = app.clone();
    r.add(m::KERNEL_DELETE, move |_c: CallCtx, p: KernelNameParams| {
        let a = a.clone();
        async move { kernels::delete(&a, &p.name) }
    })?;
    let a = app.clone();
    r.add(m::IMAGE_DELETE, move |_c: CallCtx, p: ImageNameParams| {
        let a = a.clone();
        async move { images::delete(&a, &p.name).await }
    })?;
    let a = app.clone();
    r.add(m::IMAGE_SHOW, move |_c: CallCtx, p: ImageNameParams| {
        let a = a.clone();
        async move { images::show(&a, &p.name) }
    })?;
    let a = app;
    r.add(m::IMAGE_LIST, move |_c: CallCtx, _p: NoParams| {
        let a = a.clone();
        async move { images::list(&a) }
    })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::Layout;

    #[test]
    fn method_table_matches_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let store = banger_store::Store::open(&layout.db()).unwrap();
        let config = crate::config::Config::from_env().unwrap();
        let app = Arc::new(App::new(
            layout,
            config,
            store,
            Arc::new(banger_helper::InProcess),
            "ssh-ed25519 AAAA test".into(),
        ));
        let r = router(app).unwrap();
        assert_eq!(r.methods(), m::METHODS);
    }
}
