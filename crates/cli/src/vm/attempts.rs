//! `vm run PATH --parallel N -- CMD` and `vm run PATH --each 'CMD1' 'CMD2'`: several
//! attempts at once, each in a fresh VM with its own copy of the repository, each
//! attempt's changes committed as the branch `banger/<run-id>/<i>` in the host
//! repository (`banger_workspace::commit_patch`: plumbing only, so the user's work
//! tree, index, HEAD and current branch are never touched).
//!
//! Every attempt has its own daemon connections and runs to its end whatever the others
//! do: a failed boot is that attempt's error, not the run's. VMs are deleted at the end
//! unless `--keep`. The outputs are captured (capped) since N streams cannot share a
//! terminal; `--capture` shows them (after the table, or in the JSON).

use super::cmd::Sizes;
use super::run::{create, create_params, new_op_id};
use crate::capture::{Capture, Captured, DEFAULT_CAP};
use crate::errors::{self, Class};
use crate::exec::{self, Input, Request};
use crate::workspace::{self, Via};
use crate::{daemon, output, ui};
use banger_model::{Layout, VmName};
use banger_rpc::{ClientError, ErrorCode, VmDelete, VmDeleteParams};
use banger_workspace as ws;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The largest guest patch an attempt brings back.
const MAX_PATCH: usize = 256 * 1024 * 1024;

/// What `vm run` was asked for.
pub struct Plan {
    /// The repository.
    pub path: PathBuf,
    /// Image and sizes of every VM.
    pub sizes: Sizes,
    /// Keep the VMs.
    pub keep: bool,
    /// Show the outputs.
    pub capture: bool,
    /// `--parallel N`.
    pub parallel: Option<u32>,
    /// `--run-id`.
    pub run_id: Option<String>,
    /// `--each` commands (shell lines).
    pub each: Vec<String>,
    /// The command after `--` (with `--parallel`).
    pub command: Vec<String>,
}

/// One attempt's outcome (docs/json.md, `attempts`).
#[derive(Debug, Serialize)]
struct Attempt {
    attempt: u32,
    vm: String,
    command: String,
    exit_code: Option<i32>,
    duration_ms: u64,
    branch: Option<String>,
    commit: Option<String>,
    files_changed: u64,
    insertions: u64,
    deletions: u64,
    error: Option<errors::ErrorBody>,
    stdout: Option<Captured>,
    stderr: Option<Captured>,
}

/// The whole run.
#[derive(Debug, Serialize)]
struct Report {
    run_id: String,
    repository: String,
    base: String,
    duration_ms: u64,
    kept: bool,
    attempts: Vec<Attempt>,
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Run the plan. Exit status: 0 when every command ran and exited 0, 1 when one
/// exited non-zero, 125 when banger failed for one (it could not boot, ship, export
/// or commit).
pub async fn run(plan: Plan) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let repo = ws::inspect(&plan.path)?;
    let commands: Vec<(String, Request)> = if plan.each.is_empty() {
        if plan.command.is_empty() {
            return Err(errors::fail(
                Class::Usage,
                "--parallel needs a command after --, e.g. --parallel 3 -- make test",
            ));
        }
        let n = plan.parallel.unwrap_or(1);
        (0..n)
            .map(|_| {
                (
                    crate::ssh::remote_line(&plan.command),
                    Request::from_argv(&plan.command),
                )
            })
            .collect()
    } else {
        if !plan.command.is_empty() || plan.parallel.is_some() {
            return Err(errors::fail(
                Class::Usage,
                "--each takes the commands itself; drop --parallel and the command after --",
            ));
        }
        plan.each
            .iter()
            .map(|c| (c.clone(), Request::from_argv(std::slice::from_ref(c))))
            .collect()
    };
    let run_id = plan.run_id.clone().unwrap_or_else(run_id);
    for i in 1..=commands.len() {
        if !ws::valid_branch(&repo.root, &branch(&run_id, i)) {
            return Err(errors::fail(
                Class::Failed,
                format!("git refuses the branch name {}", branch(&run_id, i)),
            ));
        }
    }
    if output::progress() != output::ProgressMode::None && !output::json() {
        anstream::eprintln!(
            "run {run_id}: {} attempts on {} ({})",
            commands.len(),
            repo.root.display(),
            &repo.head[..repo.head.len().min(12)]
        );
    }
    let attempts = commands.into_iter().enumerate().map(|(i, (shown, req))| {
        let a = One {
            run_id: &run_id,
            index: i + 1,
            repo: &repo,
            sizes: plan.sizes.clone(),
            keep: plan.keep,
            capture: plan.capture,
        };
        a.run(shown, req)
    });
    let attempts = futures_join_all(attempts).await;
    let report = Report {
        run_id,
        repository: repo.root.display().to_string(),
        base: repo.head.clone(),
        duration_ms: ms(started),
        kept: plan.keep,
        attempts,
    };
    let code = if report.attempts.iter().any(|a| a.error.is_some()) {
        super::EXIT_BANGER_FAILED
    } else if report.attempts.iter().any(|a| a.exit_code != Some(0)) {
        1
    } else {
        0
    };
    output::render(&report, print_report)?;
    Ok(ExitCode::from(code))
}

/// Await every future, concurrently, in order.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn print_report(r: &Report) {
    let mut t = ui::table(&["ATTEMPT", "EXIT", "DURATION", "FILES", "+/-", "BRANCH"]);
    for a in &r.attempts {
        t.add_row(vec![
            a.attempt.to_string(),
            a.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            format!("{:.1}s", a.duration_ms as f64 / 1000.0),
            a.files_changed.to_string(),
            format!("+{} -{}", a.insertions, a.deletions),
            a.branch.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    ui::print_table(&t);
    for a in &r.attempts {
        if let Some(e) = &a.error {
            anstream::eprintln!("attempt {} ({}): error: {}", a.attempt, a.vm, e.message);
        }
        for (what, c) in [("stdout", &a.stdout), ("stderr", &a.stderr)] {
            if let Some(c) = c.as_ref().filter(|c| c.bytes > 0) {
                println!(
                    "--- attempt {} {what}{}",
                    a.attempt,
                    if c.truncated { " (truncated)" } else { "" }
                );
                print!("{}", c.text);
                if !c.text.ends_with('\n') {
                    println!();
                }
            }
        }
    }
    let branches: Vec<&str> = r
        .attempts
        .iter()
        .filter_map(|a| a.branch.as_deref())
        .collect();
    if let [a, b, ..] = branches[..] {
        output::hint(format!("compare: git diff {a} {b}"));
    }
}

fn branch(run_id: &str, i: usize) -> String {
    format!("banger/{run_id}/{i}")
}

/// A short random run id (lower-case hex: valid in VM names and branch names).
fn run_id() -> String {
    use rand::Rng;
    format!("{:06x}", rand::rng().random_range(0..0x100_0000u32))
}

/// One attempt.
struct One<'a> {
    run_id: &'a str,
    index: usize,
    repo: &'a ws::Repo,
    sizes: Sizes,
    keep: bool,
    capture: bool,
}

impl One<'_> {
    async fn run(self, shown: String, req: Request) -> Attempt {
        let started = Instant::now();
        let name = format!("run-{}-{}", self.run_id, self.index);
        let mut a = Attempt {
            attempt: u32::try_from(self.index).unwrap_or(u32::MAX),
            vm: name.clone(),
            command: shown,
            exit_code: None,
            duration_ms: 0,
            branch: None,
            commit: None,
            files_changed: 0,
            insertions: 0,
            deletions: 0,
            error: None,
            stdout: None,
            stderr: None,
        };
        let op = new_op_id();
        let (mut out, mut err) = (Capture::new(DEFAULT_CAP), Capture::new(DEFAULT_CAP));
        let r = self
            .attempt(&name, &op, req, &mut out, &mut err, &mut a)
            .await;
        if let Err(e) = r {
            a.error = Some(errors::body(
                &e.context(format!("attempt {} ({name})", self.index)),
            ));
        }
        if self.capture {
            a.stdout = Some(out.captured());
            a.stderr = Some(err.captured());
        }
        if !self.keep {
            delete(&name, op).await;
        }
        a.duration_ms = ms(started);
        a
    }

    async fn attempt(
        &self,
        name: &str,
        op: &str,
        mut req: Request,
        out: &mut Capture,
        err: &mut Capture,
        a: &mut Attempt,
    ) -> anyhow::Result<()> {
        let mut c = daemon::connect(&Layout::for_client()).await?;
        let p = create_params(Some(VmName::parse(name)?), self.sizes.clone());
        create(&mut c, &p, false, Some(op), true).await?;
        let w = workspace::prepare(&mut c, name, Via::Agent, &self.repo.root, None).await?;
        req.cwd = Some(w.guest_path.clone());
        let code = exec::run_to(name, req, Input::Null, out, err).await?;
        a.exit_code = Some(code);
        let patch =
            workspace::export_patch(name, ws::export_script(&w.guest_path, &w.head), MAX_PATCH)
                .await?;
        let b = branch(self.run_id, self.index);
        let message = format!(
            "banger run {} attempt {}: {} (exit {code})\n\nVM {name}, base {}",
            self.run_id, self.index, a.command, w.head
        );
        let root = self.repo.root.clone();
        let (head, b2) = (w.head.clone(), b.clone());
        let done = tokio::task::spawn_blocking(move || {
            ws::commit_patch(&root, &head, &patch, &b2, &message)
        })
        .await??;
        a.branch = Some(b);
        a.commit = Some(done.commit);
        a.files_changed = done.stats.files;
        a.insertions = done.stats.insertions;
        a.deletions = done.stats.deletions;
        Ok(())
    }
}

/// Delete the attempt's VM (only the one its own create call made).
async fn delete(name: &str, op: String) {
    let r = async {
        let mut c = daemon::connect(&Layout::for_client()).await?;
        c.call::<VmDelete>(
            &VmDeleteParams {
                name: name.to_string(),
                force: true,
                created_op: Some(op),
            },
            |_| {},
        )
        .await
        .map_err(anyhow::Error::new)
    };
    if let Err(e) = r.await {
        let gone = e.chain().any(|c| {
            matches!(c.downcast_ref::<ClientError>(), Some(ClientError::Rpc(r)) if r.code == ErrorCode::NotFound)
        });
        if !gone {
            errors::print(&e.context(format!("deleting VM {name}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_matches_its_schema_and_run_ids_make_valid_names() {
        let id = run_id();
        assert!(VmName::parse(&format!("run-{id}-16")).is_ok());
        let failed = errors::body(&errors::fail(Class::Failed, "boot failed"));
        let a = |i: u32, error: Option<errors::ErrorBody>| Attempt {
            attempt: i,
            vm: format!("run-{id}-{i}"),
            command: "make".into(),
            exit_code: error.is_none().then_some(0),
            duration_ms: 1,
            branch: Some(branch(&id, i as usize)),
            commit: Some("c0ffee".into()),
            files_changed: 1,
            insertions: 2,
            deletions: 0,
            error,
            stdout: Some(Capture::new(1).captured()),
            stderr: None,
        };
        let r = Report {
            run_id: id.clone(),
            repository: "/src/x".into(),
            base: "abc".into(),
            duration_ms: 2,
            kept: false,
            attempts: vec![a(1, None), a(2, Some(failed))],
        };
        crate::schema::assert_shape("attempts", &serde_json::to_value(&r).unwrap());
    }
}
