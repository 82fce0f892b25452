//! `vm start | stop | restart | kill | set | delete | prune`. The verbs that take
//! several names apply to each in turn; one failure does not stop the others, and in
//! JSON mode they print an array of the resulting records.

use super::inspect::print_vm;
use super::{confirm, Outcomes};
use crate::errors::{fail, Class};
use crate::{output, ui};
use banger_model::VmState;
use banger_rpc::{
    Client, Method, NoParams, PruneResult, VmDelete, VmDeleteParams, VmInfo, VmKill, VmList,
    VmNameParams, VmPrune, VmRestart, VmSet, VmSetParams, VmShow, VmStart, VmStop,
};
use std::process::ExitCode;

/// A call on one VM that reports stages (start, stop, restart), with progress.
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

/// Apply a staged verb to each name; `done` prints the human line for one result.
async fn each_staged<M>(
    c: &mut Client,
    names: Vec<String>,
    what: &str,
    done: impl Fn(&VmInfo),
) -> anyhow::Result<ExitCode>
where
    M: Method<Params = VmNameParams, Result = VmInfo>,
{
    let mut out = Outcomes::default();
    let mut infos = vec![];
    for name in names {
        match staged::<M>(c, &name, what).await {
            Ok(info) => {
                if !output::json() {
                    done(&info);
                }
                infos.push(info);
            }
            Err(e) => out.failed(&e),
        }
    }
    if output::json() {
        output::print_json(&infos)?;
    }
    Ok(out.code())
}

/// The line after a VM came up, and the command people want next.
pub fn print_running(info: &VmInfo) {
    match info.ssh_port {
        // Rootless: the guest's address is private to its own network stack.
        Some(port) => println!(
            "{} is running (rootless: ssh at 127.0.0.1:{port}{})",
            info.name,
            published(info)
        ),
        None => println!("{} is running at {}", info.name, info.ip),
    }
    output::hint(format!("next: banger vm ssh {}", info.name));
}

/// `, published 127.0.0.1:18080->8080` for a VM's published ports (or nothing).
fn published(info: &VmInfo) -> String {
    if info.ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = info.ports.iter().map(ToString::to_string).collect();
    format!(", published {}", list.join(", "))
}

/// `banger vm start NAME...`.
pub async fn start(c: &mut Client, names: Vec<String>, timings: bool) -> anyhow::Result<ExitCode> {
    each_staged::<VmStart>(c, names, "starting", |info| {
        if timings {
            ui::print_timings(&info.timings);
        }
        print_running(info);
    })
    .await
}

/// `banger vm stop NAME...`.
pub async fn stop(c: &mut Client, names: Vec<String>) -> anyhow::Result<ExitCode> {
    each_staged::<VmStop>(c, names, "stopping", |info| {
        let total: u64 = info.timings.iter().map(|t| t.ms).sum();
        println!("{} stopped ({:.1} s)", info.name, total as f64 / 1000.0);
    })
    .await
}

/// `banger vm restart NAME...`.
pub async fn restart(c: &mut Client, names: Vec<String>) -> anyhow::Result<ExitCode> {
    each_staged::<VmRestart>(c, names, "restarting", print_running).await
}

/// `banger vm kill NAME...`: a VM that was not running is said so (and left alone).
pub async fn kill(c: &mut Client, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut out = Outcomes::default();
    let mut infos = vec![];
    for name in names {
        let r = async {
            let before = c
                .call::<VmShow>(&VmNameParams { name: name.clone() }, |_| {})
                .await?;
            if before.state != VmState::Running && before.pid.is_none() {
                output::hint(format!(
                    "{name} was not running ({}); nothing to kill",
                    before.state.as_str()
                ));
                return anyhow::Ok(before);
            }
            let info = c.call::<VmKill>(&VmNameParams { name }, |_| {}).await?;
            output::say(format!("{} killed", info.name));
            Ok(info)
        }
        .await;
        match r {
            Ok(i) => infos.push(i),
            Err(e) => out.failed(&e),
        }
    }
    if output::json() {
        output::print_json(&infos)?;
    }
    Ok(out.code())
}

/// `banger vm prune`: asks first unless `force`; answering no is not a failure.
pub async fn prune(c: &mut Client, force: bool) -> anyhow::Result<ExitCode> {
    let vms = c.call::<VmList>(&NoParams {}, |_| {}).await?;
    let doomed: Vec<&str> = vms
        .iter()
        .filter(|v| matches!(v.state, VmState::Stopped | VmState::Error))
        .map(|v| v.name.as_str())
        .collect();
    if doomed.is_empty() {
        let why = if vms.is_empty() {
            "there are no VMs"
        } else {
            "every VM is running (or starting)"
        };
        output::hint(format!("nothing to prune: {why}"));
        return output::render(&PruneResult::default(), |_| {});
    }
    if !force {
        let q = format!(
            "delete {} VM(s) and their disks: {}?",
            doomed.len(),
            doomed.join(", ")
        );
        match confirm(&q)? {
            Some(true) => {}
            Some(false) => {
                output::hint("nothing deleted");
                return output::render(&PruneResult::default(), |_| {});
            }
            None => {
                return Err(fail(
                    Class::Usage,
                    format!("{q} There is no terminal to ask on; pass -f to prune without asking"),
                ))
            }
        }
    }
    let r = c.call::<VmPrune>(&NoParams {}, |_| {}).await?;
    output::render(&r, |r| {
        for n in &r.deleted {
            println!("deleted {n}");
        }
        if r.deleted.is_empty() {
            println!("nothing to prune: every VM is running");
        }
    })
}

/// `banger vm set`: at least one of the flags.
pub async fn set(
    c: &mut Client,
    name: String,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_mib: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if cpus.is_none() && memory_mib.is_none() && disk_mib.is_none() {
        return Err(fail(
            Class::Usage,
            format!(
                "nothing to change: give --cpus N, --memory SIZE and/or --disk SIZE \
                 (e.g. banger vm set {name} --cpus 4 --memory 4G --disk 32G)"
            ),
        ));
    }
    let p = VmSetParams {
        name,
        cpus,
        memory_mib,
        disk_mib,
    };
    let v = c.call::<VmSet>(&p, |_| {}).await?;
    output::render(&v, print_vm)
}

/// What `vm delete` prints in JSON mode.
#[derive(Debug, serde::Serialize)]
struct Deleted {
    deleted: Vec<String>,
}

/// `banger vm delete NAME...`: each VM in turn; failures are reported and make the
/// exit status the first failure's class, but do not stop the others.
pub async fn delete(c: &mut Client, names: Vec<String>, force: bool) -> anyhow::Result<ExitCode> {
    let mut out = Outcomes::default();
    let mut deleted = vec![];
    for name in names {
        match delete_one(c, &name, force).await {
            Ok(true) => {
                output::say(format!("deleted {name}"));
                deleted.push(name);
            }
            Ok(false) => output::hint(format!("{name} is running; not deleted")),
            Err(e) => out.failed(&e),
        }
    }
    if output::json() {
        output::print_json(&Deleted { deleted })?;
    }
    Ok(out.code())
}

/// Delete one VM. A running VM is deleted only with `force`, or when the user says
/// so on a terminal (without one, the daemon refuses it with its advice); returns
/// false when the user said no.
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
            match confirm(&format!(
                "VM {name} is running; kill it and delete it with its disks?"
            ))? {
                Some(true) => force = true,
                Some(false) => return Ok(false),
                None => {}
            }
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
