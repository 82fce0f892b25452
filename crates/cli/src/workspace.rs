//! Workspaces from the CLI's side: the repository is on the user's machine, so the
//! CLI streams it into the guest (tar, no temporary copy) and tells the daemon what
//! it shipped; exports run git in the guest and stream the patch back. Both go
//! through banger's guest agent (no ssh crypto in the emulated guest), or OpenSSH
//! with `--via-ssh`.

use crate::exec::{self, Input, Request};
use crate::ssh;
use anyhow::{bail, Context};
use banger_channel::Command;
use banger_model::WorkspaceRecord;
use banger_rpc::{Client, SshInfo, VmNameParams, VmShow, VmWorkspaceRecord, WorkspaceParams};
use banger_workspace as ws;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// How the CLI reaches the guest.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// banger's guest agent, through the daemon.
    Agent,
    /// OpenSSH with banger's key.
    Ssh(&'a SshInfo),
}

/// Ship the repository at `path` into running VM `vm` and record it.
pub async fn prepare(
    c: &mut Client,
    vm: &str,
    via: Via<'_>,
    path: &Path,
    guest: Option<&str>,
) -> anyhow::Result<WorkspaceRecord> {
    let repo = ws::inspect(path)?;
    let guest_path = ws::guest_path(&repo.name, guest)?;
    let identity = ws::git_identity(&repo.root);
    let script = ws::prepare_script(&guest_path, identity.as_ref());
    let started = Instant::now();
    let stats = match via {
        Via::Ssh(info) => ship_ssh(info, &repo, &script).await?,
        Via::Agent => ship_agent(vm, &repo, script).await?,
    };
    if crate::output::progress() != crate::output::ProgressMode::None {
        anstream::eprintln!(
            "shipped {} to {vm}:{guest_path} ({} entries, {:.1} MiB) in {:.1} s",
            repo.root.display(),
            stats.entries,
            stats.bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        );
    }
    let record = WorkspaceRecord {
        host_path: repo.root.display().to_string(),
        guest_path,
        head: repo.head.clone(),
        prepared_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    };
    // A fresh connection: shipping a big repository can outlast the daemon's idle
    // timeout on `c`, which the caller keeps using afterwards.
    *c = crate::daemon::connect(&banger_model::Layout::for_client()).await?;
    c.call::<VmWorkspaceRecord>(
        &WorkspaceParams {
            name: vm.to_string(),
            workspace: record.clone(),
        },
        |_| {},
    )
    .await?;
    Ok(record)
}

/// Stream the repository's tar into the prepare script over ssh.
async fn ship_ssh(info: &SshInfo, repo: &ws::Repo, script: &str) -> anyhow::Result<ws::ShipStats> {
    let mut cmd = ssh::command(info, Some(script), false);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let repo2 = repo.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<ws::ShipStats> {
        let mut child = cmd
            .spawn()
            .context("running ssh (is openssh-client installed?)")?;
        let stdin = child.stdin.take().context("ssh has no stdin")?;
        let written = ws::write_tar(&repo2, std::io::BufWriter::with_capacity(1 << 20, stdin));
        let status = child.wait()?;
        if !status.success() {
            bail!("unpacking the workspace in the guest failed (ssh exit {status})");
        }
        Ok(written?)
    })
    .await?
}

/// Stream the repository's tar into the prepare script through the guest agent: a
/// thread writes the tar into a pipe whose other end is the script's stdin.
async fn ship_agent(vm: &str, repo: &ws::Repo, script: String) -> anyhow::Result<ws::ShipStats> {
    let (reader, writer) = std::io::pipe().context("making a pipe for the workspace tar")?;
    let repo2 = repo.clone();
    let tar = std::thread::spawn(move || {
        ws::write_tar(&repo2, std::io::BufWriter::with_capacity(1 << 20, writer))
    });
    let mut req = Request::from_argv(&[]);
    req.command = Command::Shell(script);
    let code = exec::run(
        vm,
        req,
        Input::Reader(Box::new(reader)),
        &mut tokio::io::sink(),
    )
    .await?;
    let written = tar
        .join()
        .map_err(|_| anyhow::anyhow!("writing the workspace tar stopped unexpectedly"))?;
    if code != 0 {
        bail!("unpacking the workspace in the guest failed (exit status {code})");
    }
    Ok(written?)
}

/// The workspace recorded for `vm`, or a clear error.
pub async fn recorded(c: &mut Client, vm: &str) -> anyhow::Result<WorkspaceRecord> {
    recorded_opt(c, vm).await?.with_context(|| {
        format!("VM {vm} has no workspace; ship one with: banger vm workspace prepare {vm} PATH")
    })
}

/// The workspace recorded for `vm`, if any.
pub async fn recorded_opt(c: &mut Client, vm: &str) -> anyhow::Result<Option<WorkspaceRecord>> {
    let v = c
        .call::<VmShow>(
            &VmNameParams {
                name: vm.to_string(),
            },
            |_| {},
        )
        .await?;
    Ok(v.workspace)
}

/// Stream the guest's changes (or its new commits) to `output` or stdout.
pub async fn export(
    vm: &str,
    via: Via<'_>,
    w: &WorkspaceRecord,
    output: Option<PathBuf>,
    commits: bool,
) -> anyhow::Result<()> {
    let script = if commits {
        ws::commits_script(&w.guest_path, &w.head)
    } else {
        ws::export_script(&w.guest_path, &w.head)
    };
    let started = Instant::now();
    let patch = match via {
        Via::Ssh(info) => {
            let mut cmd = ssh::command(info, Some(&script), false);
            cmd.stdin(Stdio::null());
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            if !out.status.success() {
                bail!(
                    "exporting the workspace failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            out.stdout
        }
        Via::Agent => export_patch(vm, script, usize::MAX).await?,
    };
    match output {
        Some(p) => {
            std::fs::write(&p, &patch).with_context(|| format!("writing {}", p.display()))?;
            anstream::eprintln!(
                "wrote {} ({} bytes) in {:.1} s; apply with: git apply {} (on commit {})",
                p.display(),
                patch.len(),
                started.elapsed().as_secs_f64(),
                p.display(),
                &w.head[..w.head.len().min(12)]
            );
        }
        None => std::io::stdout().write_all(&patch)?,
    }
    Ok(())
}

/// Run an export `script` in `vm` through the guest agent and return what it printed,
/// refusing more than `cap` bytes (what comes back from a guest is bounded).
pub async fn export_patch(vm: &str, script: String, cap: usize) -> anyhow::Result<Vec<u8>> {
    let mut req = Request::from_argv(&[]);
    req.command = Command::Shell(script);
    let mut patch = crate::capture::Capture::new(cap);
    let code = exec::run(vm, req, Input::Null, &mut patch).await?;
    if code != 0 {
        bail!("exporting the workspace failed in the guest (exit status {code}; its messages are above)");
    }
    if patch.truncated() {
        bail!("the guest's changes are larger than {cap} bytes as a patch; export them with banger vm workspace export instead");
    }
    Ok(patch.bytes().to_vec())
}

/// Warn (or re-ship, with `auto_prepare`) when the host repository's HEAD moved
/// since the workspace was shipped. Returns the workspace to use.
pub async fn check_moved(
    c: &mut Client,
    vm: &str,
    via: Via<'_>,
    w: WorkspaceRecord,
    auto_prepare: bool,
) -> anyhow::Result<WorkspaceRecord> {
    let host = Path::new(&w.host_path);
    let now = match ws::inspect(host) {
        Ok(r) => r.head,
        Err(_) => return Ok(w), // host repo gone or moved away: nothing to compare
    };
    if now == w.head {
        return Ok(w);
    }
    if auto_prepare {
        let guest = w.guest_path.clone();
        return prepare(c, vm, via, host, Some(&guest)).await;
    }
    anstream::eprintln!(
        "warning: {} moved from {} to {} since it was shipped to {vm}; \
         re-ship with banger vm workspace prepare {vm} {} (or pass --auto-prepare)",
        w.host_path,
        &w.head[..w.head.len().min(12)],
        &now[..now.len().min(12)],
        w.host_path
    );
    Ok(w)
}

/// The shell line that runs `argv` inside the workspace (a login shell there when empty).
pub fn in_workspace(w: &WorkspaceRecord, argv: &[String]) -> String {
    let cd = format!("cd {}", ws::shell_quote(&w.guest_path));
    if argv.is_empty() {
        format!("{cd} && exec \"${{SHELL:-/bin/sh}}\" -l")
    } else {
        format!("{cd} && {}", ssh::remote_line(argv))
    }
}
