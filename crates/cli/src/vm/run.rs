//! `vm create` and `vm run` (create, ship the repository, run, delete).

use super::cmd::{RunArgs, Sizes};
use super::shell::{run_ssh, ssh_info};
use super::EXIT_BANGER_FAILED;
use crate::capture::{Capture, Captured, DEFAULT_CAP};
use crate::errors::Class;
use crate::exec::{self, Input, Request};
use crate::workspace::Via;
use crate::{daemon, output, ssh, ui, workspace};
use banger_model::{Layout, VmName};
use banger_rpc::{
    Client, ClientError, ErrorCode, StageTiming, VmCreate, VmCreateParams, VmDelete,
    VmDeleteParams, VmInfo,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(super) fn create_params(name: Option<VmName>, s: Sizes) -> VmCreateParams {
    VmCreateParams {
        name,
        image: s.image,
        cpus: s.cpus,
        memory_mib: s.memory,
        disk_mib: s.disk,
        no_start: false,
        vmm: s.vmm,
        init: s.init,
        ports: s.publish,
    }
}

/// `vm.create` with a spinner; `op_id` when the caller must recognise this call's
/// VM later.
pub(super) async fn create(
    c: &mut Client,
    p: &VmCreateParams,
    timings: bool,
    op_id: Option<&str>,
    side_by_side: bool,
) -> anyhow::Result<VmInfo> {
    if let (Some(want), Some(host)) = (p.memory_mib, host_memory_mib()) {
        if want > host {
            output::hint(format!(
                "warning: --memory {} is more than this host has ({}); the guest can be \
                 killed when it uses it",
                banger_model::format_mib(want),
                banger_model::format_mib(host)
            ));
        }
    }
    let label = p.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let what = format!("creating VM {label}");
    let mut sp = if side_by_side {
        ui::Spinner::lines(&what)
    } else {
        ui::Spinner::new(&what)
    };
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

/// `banger vm create`: with a repository, it is shipped in once the VM runs (as
/// `vm workspace prepare` does), so `vm exec` then runs in it.
pub async fn create_cmd(
    c: &mut Client,
    name: VmName,
    path: Option<PathBuf>,
    timings: bool,
    no_start: bool,
    sizes: Sizes,
) -> anyhow::Result<ExitCode> {
    // Refuse a bad repository before booting anything.
    if let Some(p) = &path {
        banger_workspace::inspect(p)?;
    }
    let mut p = create_params(Some(name), sizes);
    p.no_start = no_start;
    let mut info = create(c, &p, timings, None, false).await?;
    if let Some(path) = &path {
        workspace::prepare(c, info.name.as_str(), Via::Agent, path, None).await?;
        info = c
            .call::<banger_rpc::VmShow>(
                &banger_rpc::VmNameParams {
                    name: info.name.to_string(),
                },
                |_| {},
            )
            .await?;
    }
    if output::json() {
        output::print_json(&info)?;
    } else if no_start {
        println!("{} is created (stopped)", info.name);
        output::hint(format!("next: banger vm start {}", info.name));
    } else {
        super::lifecycle::print_running(&info);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the guest command's output goes: passed through (stdout to stdout, or to
/// stderr in JSON mode, where stdout carries only the result), or captured.
pub(super) enum Outputs {
    /// Passed through.
    Through,
    /// Collected, capped.
    Captured(Capture, Capture),
}

/// The part of `vm run` after the VM is up: ship the repository if one was given,
/// then run the command (in the workspace, if any). Returns the command's status.
async fn run_in_new_vm(
    c: &mut Client,
    name: &str,
    path: Option<&Path>,
    command: &[String],
    via_ssh: bool,
    outputs: &mut Outputs,
) -> anyhow::Result<i32> {
    if via_ssh {
        let info = ssh_info(c, name).await?;
        let remote = match path {
            Some(p) => {
                let w = workspace::prepare(c, name, Via::Ssh(&info), p, None).await?;
                Some(workspace::in_workspace(&w, command))
            }
            None => (!command.is_empty()).then(|| ssh::remote_line(command)),
        };
        return run_ssh(&info, remote).await;
    }
    let mut req = Request::from_argv(command);
    if matches!(outputs, Outputs::Through) && !output::json() {
        req = req.pty_if_interactive();
    }
    match path {
        Some(p) => {
            let w = workspace::prepare(c, name, Via::Agent, p, None).await?;
            req.cwd = Some(w.guest_path);
        }
        // Like `docker run`: an image's entrypoint wraps the command.
        None => req.entrypoint = true,
    }
    match outputs {
        Outputs::Captured(out, err) => exec::run_to(name, req, Input::Inherit, out, err).await,
        Outputs::Through if output::json() => {
            exec::run(name, req, Input::Inherit, &mut tokio::io::stderr()).await
        }
        Outputs::Through => exec::run(name, req, Input::Inherit, &mut tokio::io::stdout()).await,
    }
}

/// What `vm run --json` prints (docs/json.md, `run`).
#[derive(Debug, Serialize)]
struct RunReport {
    vm: String,
    exit_code: i32,
    duration_ms: u64,
    timings: Vec<StageTiming>,
    kept: bool,
    stdout: Option<Captured>,
    stderr: Option<Captured>,
}

/// `banger vm run`: create, run, delete (unless `keep`). The exit status is the
/// command's, or [`EXIT_BANGER_FAILED`] when banger failed.
pub async fn run(c: &mut Client, a: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        name,
        keep,
        timings,
        sizes,
        path,
        via_ssh,
        capture,
        parallel,
        run_id,
        each,
        command,
    } = a;
    if parallel.is_some() || !each.is_empty() {
        let path = path.ok_or_else(|| {
            crate::errors::fail(Class::Usage, "--parallel and --each need a repository PATH")
        })?;
        return super::attempts::run(super::attempts::Plan {
            path,
            sizes,
            keep,
            capture,
            parallel,
            run_id,
            each,
            command,
        })
        .await;
    }
    if run_id.is_some() {
        return Err(crate::errors::fail(
            Class::Usage,
            "--run-id names a --parallel or --each run",
        ));
    }
    if capture && command.is_empty() {
        return Err(crate::errors::fail(
            Class::Usage,
            "--capture needs a command (an interactive shell cannot be captured)",
        ));
    }
    let started = std::time::Instant::now();
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
        r = create(c, &p, timings, Some(&create_op), false) => r,
        _ = tokio::signal::ctrl_c() => Err(crate::errors::fail(
            crate::errors::Class::Interrupted,
            format!("interrupted while creating VM {name}; it is deleted"),
        )),
    };
    let mut outputs = if capture {
        Outputs::Captured(Capture::new(DEFAULT_CAP), Capture::new(DEFAULT_CAP))
    } else {
        Outputs::Through
    };
    let mut timings = vec![];
    let result = match created {
        Ok(info) => {
            timings = info.timings;
            let r = run_in_new_vm(
                c,
                name.as_str(),
                path.as_deref(),
                &command,
                via_ssh,
                &mut outputs,
            );
            r.await
        }
        Err(e) => Err(e),
    };
    if !keep {
        // A fresh connection: the create call may have been abandoned mid-flight.
        let mut c2 = daemon::connect(&Layout::for_client()).await?;
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
                crate::errors::print(&anyhow::Error::new(e).context(format!("deleting VM {name}")));
            }
        }
    }
    let code = result?;
    if output::json() {
        let (stdout, stderr) = match &outputs {
            Outputs::Captured(o, e) => (Some(o.captured()), Some(e.captured())),
            Outputs::Through => (None, None),
        };
        output::print_json(&RunReport {
            vm: name.to_string(),
            exit_code: code,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            timings,
            kept: keep,
            stdout,
            stderr,
        })?;
    } else if let Outputs::Captured(o, e) = &outputs {
        use std::io::Write;
        std::io::stdout().write_all(o.bytes())?;
        std::io::stderr().write_all(e.bytes())?;
    }
    Ok(ExitCode::from(
        u8::try_from(code).unwrap_or(EXIT_BANGER_FAILED),
    ))
}

/// A fresh op id for a call whose result we must recognise later.
pub(super) fn new_op_id() -> String {
    use rand::Rng;
    format!("op-{:08x}", rand::rng().random::<u32>())
}

fn generated_name() -> anyhow::Result<VmName> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    Ok(VmName::parse(&format!("run-{n:04x}"))?)
}

/// The host's memory (`MemTotal` of /proc/meminfo), MiB.
fn host_memory_mib() -> Option<u64> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open("/proc/meminfo")
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut s)
        .ok()?;
    mem_total_mib(&s)
}

fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_result_matches_its_schema() {
        let c = Capture::new(2);
        let r = RunReport {
            vm: "run-1".into(),
            exit_code: 3,
            duration_ms: 10,
            timings: vec![StageTiming {
                stage: "boot".into(),
                ms: 1,
            }],
            kept: false,
            stdout: Some(c.captured()),
            stderr: None,
        };
        crate::schema::assert_shape("run", &serde_json::to_value(&r).unwrap());
    }

    #[test]
    fn reads_the_hosts_memory() {
        assert_eq!(
            mem_total_mib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24000)
        );
        assert_eq!(mem_total_mib("garbage"), None);
    }
}
