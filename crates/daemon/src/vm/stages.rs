//! The shared machinery of multi-step VM operations: named, timed stages reported as
//! progress, and the undo stack of a start.
//!
//! A start is a sequence of steps (disks, network, boot, agent, ssh). Each step that
//! creates something records how to remove it ([`Undo`]) right after creating it;
//! when a later step fails, [`Steps::rollback`] removes exactly what the steps before
//! it created, newest first. Things that existed before the start (a stopped VM's
//! disks) are never recorded, so they are never undone.
//!
//! Failpoints (`failpoint.rs`) are consulted here and nowhere else: when a step
//! ends, its name is checked, after its work is done and its undo recorded.

use crate::app::App;
use crate::error::Result;
use crate::failpoint::Failpoints;
use crate::handles;
use crate::ops::Operations;
use banger_helper::PrivOp;
use banger_rpc::{ProgressSink, StageTiming};
use std::path::PathBuf;
use std::time::Instant;

/// Records stage timings, reports progress and the operation's stage, logs each stage.
pub(crate) struct Stages<'a> {
    vm: String,
    progress: &'a ProgressSink,
    op: Option<(&'a Operations, String)>,
    timings: Vec<StageTiming>,
    current: Option<(String, Instant)>,
}

impl<'a> Stages<'a> {
    /// Stages of an operation on VM `vm`, reported on `progress` and (when `op` is
    /// given) in the operations registry.
    pub fn new(vm: &str, progress: &'a ProgressSink, op: Option<(&'a Operations, &str)>) -> Self {
        Self {
            vm: vm.to_string(),
            progress,
            op: op.map(|(ops, id)| (ops, id.to_string())),
            timings: vec![],
            current: None,
        }
    }

    /// End the running stage, if any, and start `stage`.
    pub fn begin(&mut self, stage: &str) {
        self.end();
        self.progress.stage(stage);
        if let Some((ops, id)) = &self.op {
            ops.stage(id, stage);
        }
        self.current = Some((stage.to_string(), Instant::now()));
    }

    /// End the running stage; returns its name.
    pub fn end(&mut self) -> Option<String> {
        let (stage, t) = self.current.take()?;
        let ms = t.elapsed().as_millis() as u64;
        tracing::info!(vm = %self.vm, stage = %stage, ms, "stage done");
        self.timings.push(StageTiming {
            stage: stage.clone(),
            ms,
        });
        Some(stage)
    }

    /// Where progress goes.
    pub fn progress(&self) -> &'a ProgressSink {
        self.progress
    }

    /// The stages so far (ending the running one).
    pub fn finish(mut self) -> Vec<StageTiming> {
        self.end();
        self.timings
    }
}

/// Something a start step created, to remove if a later step fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// A directory the start created (the VM's state or runtime directory).
    RemoveDir(PathBuf),
    /// A file the start created (a new disk).
    RemoveFile(PathBuf),
    /// The VM's tap.
    DeleteTap(String),
    /// The VM's passt (rootless mode), by its socket.
    StopPasst(PathBuf),
    /// The launched VMM (and its `handles.json` in `vm_dir`).
    KillVmm {
        /// The VMM's handles.
        handles: banger_vmm::Handles,
        /// The VM's state directory.
        vm_dir: PathBuf,
        /// The VM's runtime directory (the backend's sockets).
        runtime_dir: PathBuf,
    },
}

/// Remove one thing a start made. Best effort: a failure is logged.
async fn undo(app: &App, u: Undo) {
    tracing::info!(undo = ?u, "undoing a start step");
    match u {
        Undo::RemoveDir(d) => {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(path = %d.display(), "undo: {e}");
            }
        }
        Undo::RemoveFile(f) => {
            if let Err(e) = std::fs::remove_file(&f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %f.display(), "undo: {e}");
                }
            }
        }
        Undo::DeleteTap(name) => {
            if let Err(e) = app.privileged.run(PrivOp::DeleteTap { name }).await {
                tracing::warn!("undo: removing the tap failed: {e}");
            }
        }
        Undo::StopPasst(socket) => super::userspace::stop_passt(&socket).await,
        Undo::KillVmm {
            handles: h,
            vm_dir,
            runtime_dir,
        } => {
            let vmm = app.backends.for_handles(&h);
            if let Err(e) = vmm.kill(&h).await {
                tracing::warn!("undo: stopping the VMM failed: {e}");
            }
            vmm.cleanup(&runtime_dir);
            handles::remove(&vm_dir);
        }
    }
}

/// The steps of one start: stages plus the undo stack.
pub(crate) struct Steps<'a> {
    stages: Stages<'a>,
    undo: Vec<Undo>,
    failpoints: &'a Failpoints,
}

impl<'a> Steps<'a> {
    /// A start reported through `stages`, failing where `failpoints` say.
    pub fn new(stages: Stages<'a>, failpoints: &'a Failpoints) -> Self {
        Self {
            stages,
            undo: vec![],
            failpoints,
        }
    }

    /// End the running step (its failpoint may fire here) and begin `step`.
    pub fn begin(&mut self, step: &str) -> Result<()> {
        self.end()?;
        self.stages.begin(step);
        Ok(())
    }

    /// End the running step; its failpoint may fire.
    pub fn end(&mut self) -> Result<()> {
        match self.stages.end() {
            Some(done) => self.failpoints.check_vm(&done, Some(&self.stages.vm)),
            None => Ok(()),
        }
    }

    /// A failpoint inside the running step (see `failpoint.rs`), for the moments
    /// between a step's own actions (`launched`: the VMM runs, its handles are not
    /// recorded yet).
    pub fn point(&self, point: &str) -> Result<()> {
        self.failpoints.check_vm(point, Some(&self.stages.vm))
    }

    /// Record how to remove something the running step just created.
    pub fn created(&mut self, undo: Undo) {
        self.undo.push(undo);
    }

    /// Where progress goes.
    pub fn progress(&self) -> &'a ProgressSink {
        self.stages.progress()
    }

    /// Remove everything the steps created, newest first, and hand back the timings.
    /// Best effort: a failed removal is logged and the rest still runs.
    pub async fn rollback(mut self, app: &App) -> Vec<StageTiming> {
        self.stages.end();
        self.undo_to(app, 0).await;
        self.stages.finish()
    }

    /// How many undos are recorded: a point to [`Steps::undo_to`] later.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Undo what was made since `mark`, newest first (a warm restore that failed
    /// gives way to a cold boot without undoing the steps before it).
    pub async fn undo_to(&mut self, app: &App, mark: usize) {
        while self.undo.len() > mark {
            if let Some(u) = self.undo.pop() {
                undo(app, u).await;
            }
        }
    }

    /// The start succeeded: keep what it made; hand back the timings.
    pub fn commit(self) -> Vec<StageTiming> {
        self.stages.finish()
    }
}
