//! `vm create` and `vm run` (create, ship the repository, run, delete).

use super::cmd::Sizes;
use super::shell::{run_ssh, ssh_info};
use super::EXIT_BANGER_FAILED;
use crate::exec::{self, Input, Request};
use crate::workspace::Via;
use crate::{daemon, ssh, ui, workspace};
use banger_model::{Layout, VmName};
use banger_rpc::{
    Client, ClientError, ErrorCode, VmCreate, VmCreateParams, VmDelete, VmDeleteParams, VmInfo,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn create_params(name: Option<VmName>, s: Sizes) -> VmCreateParams {
    VmCreateParams {
        name,
        image: s.image,
        cpus: s.cpus,
        memory_mib: s.memory,
        disk_mib: s.disk,
        no_start: false,
        vmm: s.vmm,
        init: s.init,
    }
}

/// `vm.create` with a spinner; `op_id` when the caller must recognise this call's
/// VM later.
async fn create(
    c: &mut Client,
    p: &VmCreateParams,
    timings: bool,
    op_id: Option<&str>,
) -> anyhow::Result<VmInfo> {
    let label = p.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let mut sp = ui::Spinner::new(&format!("creating VM {label}"));
    let r = match op_id {
        Some(op) => {
            c.call_with_op_id::<VmCreate>(p, op, |pr| sp.update(&pr))
                .await
        }
        None => c.call::<VmCreate>(p, |pr| sp.update(&pr)).await,
    };
    sp.finish();
    let info = r?;
    if timings {
        anstream::eprintln!("VM {} started:", info.name);
        ui::print_timings(&info.timings);
    }
    Ok(info)
}

/// `banger vm create`.
pub async fn create_cmd(
    c: &mut Client,
    name: VmName,
    timings: bool,
    no_start: bool,
    sizes: Sizes,
) -> anyhow::Result<ExitCode> {
    let mut p = create_params(Some(name), sizes);
    p.no_start = no_start;
    let info = create(c, &p, timings, None).await?;
    if no_start {
        println!(
            "{} is created (stopped); start it with banger vm start {}",
            info.name, info.name
        );
    } else {
        println!("{} is running at {}", info.name, info.ip);
    }
    Ok(ExitCode::SUCCESS)
}

/// How `vm run` behaves besides what it boots.
#[derive(Debug, Clone, Copy)]
pub struct RunHow {
    /// Keep the VM afterwards.
    pub keep: bool,
    /// Print the start stages' timings.
    pub timings: bool,
    /// Ship and run over OpenSSH instead of the guest agent.
    pub via_ssh: bool,
}

/// The part of `vm run` after the VM is up: ship the repository if one was given,
/// then run the command (in the workspace, if any). Returns the command's status.
async fn run_in_new_vm(
    c: &mut Client,
    name: &str,
    path: Option<&Path>,
    command: &[String],
    via_ssh: bool,
) -> anyhow::Result<i32> {
    if via_ssh {
        let info = ssh_info(c, name).await?;
        ssh::wait_sshd(&info).await?;
        let remote = match path {
            Some(p) => {
                let w = workspace::prepare(c, name, Via::Ssh(&info), p, None).await?;
                Some(workspace::in_workspace(&w, command))
            }
            None => (!command.is_empty()).then(|| ssh::remote_line(command)),
        };
        return run_ssh(&info, remote).await;
    }
    let mut req = Request::from_argv(command).pty_if_interactive();
    match path {
        Some(p) => {
            let w = workspace::prepare(c, name, Via::Agent, p, None).await?;
            req.cwd = Some(w.guest_path);
        }
        // Like `docker run`: an image's entrypoint wraps the command.
        None => req.entrypoint = true,
    }
    exec::run(name, req, Input::Inherit, &mut tokio::io::stdout()).await
}

/// `banger vm run`: create, run, delete (unless `keep`). The exit status is the
/// command's, or [`EXIT_BANGER_FAILED`] when banger failed.
pub async fn run(
    c: &mut Client,
    name: Option<VmName>,
    how: RunHow,
    sizes: Sizes,
    path: Option<PathBuf>,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    // Refuse a bad repository before booting anything.
    if let Some(p) = &path {
        banger_workspace::inspect(p)?;
    }
    let name = match name {
        Some(n) => n,
        None => generated_name()?,
    };
    let p = create_params(Some(name.clone()), sizes);
    // Our own op id for the create call: cleanup deletes only the VM this call
    // created, never a same-named VM that existed before (`--name EXISTING`).
    let create_op = new_op_id();
    let created = tokio::select! {
        r = create(c, &p, how.timings, Some(&create_op)) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted while creating VM {name}")),
    };
    let result = match created {
        Ok(_) => run_in_new_vm(c, name.as_str(), path.as_deref(), &command, how.via_ssh).await,
        Err(e) => Err(e),
    };
    if !how.keep {
        // A fresh connection: the create call may have been abandoned mid-flight.
        let mut c2 = daemon::connect(&Layout::from_env()).await?;
        let del = c2
            .call::<VmDelete>(
                &VmDeleteParams {
                    name: name.to_string(),
                    force: true,
                    created_op: Some(create_op),
                },
                |_| {},
            )
            .await;
        if let Err(e) = del {
            if !matches!(&e, ClientError::Rpc(r) if r.code == ErrorCode::NotFound) {
                ui::print_error(&anyhow::Error::new(e).context(format!("deleting VM {name}")));
            }
        }
    }
    let code = result?;
    Ok(ExitCode::from(
        u8::try_from(code).unwrap_or(EXIT_BANGER_FAILED),
    ))
}

/// A fresh op id for a call whose result we must recognise later.
fn new_op_id() -> String {
    use rand::Rng;
    format!("op-{:08x}", rand::rng().random::<u32>())
}

fn generated_name() -> anyhow::Result<VmName> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    Ok(VmName::parse(&format!("run-{n:04x}"))?)
}
