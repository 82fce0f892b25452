//! `vm start | stop | restart | kill | set | delete | prune`.

use super::confirm;
use super::inspect::print_vm;
use crate::ui;
use banger_model::VmState;
use banger_rpc::{
    Client, Method, NoParams, VmDelete, VmDeleteParams, VmInfo, VmKill, VmList, VmNameParams,
    VmPrune, VmRestart, VmSet, VmSetParams, VmShow, VmStart, VmStop,
};
use std::process::ExitCode;

/// A call on one VM that reports stages (start, stop, restart), with a spinner.
async fn staged<M>(c: &mut Client, name: &str, what: &str) -> anyhow::Result<VmInfo>
where
    M: Method<Params = VmNameParams, Result = VmInfo>,
{
    let mut sp = ui::Spinner::new(&format!("{what} {name}"));
    let r = c
        .call::<M>(
            &VmNameParams {
                name: name.to_string(),
            },
            |p| sp.update(&p),
        )
        .await;
    sp.finish();
    Ok(r?)
}

/// `banger vm start`.
pub async fn start(c: &mut Client, name: &str, timings: bool) -> anyhow::Result<ExitCode> {
    let info = staged::<VmStart>(c, name, "starting").await?;
    if timings {
        ui::print_timings(&info.timings);
    }
    println!("{} is running at {}", info.name, info.ip);
    Ok(ExitCode::SUCCESS)
}

/// `banger vm stop`.
pub async fn stop(c: &mut Client, name: &str) -> anyhow::Result<ExitCode> {
    let info = staged::<VmStop>(c, name, "stopping").await?;
    let total: u64 = info.timings.iter().map(|t| t.ms).sum();
    println!("{} stopped ({:.1} s)", info.name, total as f64 / 1000.0);
    Ok(ExitCode::SUCCESS)
}

/// `banger vm restart`.
pub async fn restart(c: &mut Client, name: &str) -> anyhow::Result<ExitCode> {
    let info = staged::<VmRestart>(c, name, "restarting").await?;
    println!("{} is running at {}", info.name, info.ip);
    Ok(ExitCode::SUCCESS)
}

/// `banger vm kill`.
pub async fn kill(c: &mut Client, name: String) -> anyhow::Result<ExitCode> {
    let info = c.call::<VmKill>(&VmNameParams { name }, |_| {}).await?;
    println!("{} killed", info.name);
    Ok(ExitCode::SUCCESS)
}

/// `banger vm prune`: asks first unless `force`.
pub async fn prune(c: &mut Client, force: bool) -> anyhow::Result<ExitCode> {
    if !force {
        let vms = c.call::<VmList>(&NoParams {}, |_| {}).await?;
        let doomed: Vec<&str> = vms
            .iter()
            .filter(|v| matches!(v.state, VmState::Stopped | VmState::Error))
            .map(|v| v.name.as_str())
            .collect();
        if doomed.is_empty() {
            println!("nothing to prune: every VM is running");
            return Ok(ExitCode::SUCCESS);
        }
        if !confirm(&format!(
            "delete {} VM(s) and their disks: {}?",
            doomed.len(),
            doomed.join(", ")
        ))? {
            anyhow::bail!("not pruned (use banger vm prune -f to skip this question)");
        }
    }
    let r = c.call::<VmPrune>(&NoParams {}, |_| {}).await?;
    for n in &r.deleted {
        println!("deleted {n}");
    }
    if r.deleted.is_empty() {
        println!("nothing to prune: every VM is running");
    }
    Ok(ExitCode::SUCCESS)
}

/// `banger vm set`.
pub async fn set(
    c: &mut Client,
    name: String,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_mib: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let p = VmSetParams {
        name,
        cpus,
        memory_mib,
        disk_mib,
    };
    let v = c.call::<VmSet>(&p, |_| {}).await?;
    print_vm(&v);
    Ok(ExitCode::SUCCESS)
}

/// `banger vm delete NAME...`: each VM in turn; failures are reported and make the
/// exit status 1, but do not stop the others.
pub async fn delete(c: &mut Client, names: Vec<String>, force: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for name in names {
        match delete_one(c, &name, force).await {
            Ok(true) => println!("deleted {name}"),
            Ok(false) => {
                failed = true;
                anstream::eprintln!("{name} is running; not deleted (use -f to delete it anyway)");
            }
            Err(e) => {
                failed = true;
                ui::print_error(&e);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Delete one VM. A running VM is deleted only with `force`, or when the user says
/// so on a terminal; returns false when it was left alone.
async fn delete_one(c: &mut Client, name: &str, force: bool) -> anyhow::Result<bool> {
    let mut force = force;
    if !force {
        let v = c
            .call::<VmShow>(
                &VmNameParams {
                    name: name.to_string(),
                },
                |_| {},
            )
            .await?;
        if v.state == VmState::Running {
            if !confirm(&format!(
                "VM {name} is running; kill it and delete it with its disks?"
            ))? {
                return Ok(false);
            }
            force = true;
        }
    }
    let p = VmDeleteParams {
        name: name.to_string(),
        force,
        created_op: None,
    };
    c.call::<VmDelete>(&p, |_| {}).await?;
    Ok(true)
}
