//! The registry of long calls in flight, for `banger operations`.

use banger_rpc::OperationInfo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One call in flight.
struct Entry {
    method: String,
    target: String,
    stage: String,
    started: Instant,
}

/// Registry of long-running calls (create, start, stop, image build).
#[derive(Default)]
pub struct Operations {
    inner: Mutex<HashMap<String, Entry>>,
}

/// Removes its operation from the registry when dropped (success, error or cancel).
pub struct OpGuard<'a> {
    ops: &'a Operations,
    op_id: String,
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock leaves a consistent map: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register `op_id` running `method` on `target`.
    pub fn begin(&self, op_id: &str, method: &str, target: &str) -> OpGuard<'_> {
        self.lock().insert(
            op_id.to_string(),
            Entry {
                method: method.to_string(),
                target: target.to_string(),
                stage: "starting".to_string(),
                started: Instant::now(),
            },
        );
        OpGuard {
            ops: self,
            op_id: op_id.to_string(),
        }
    }

    /// Record the stage `op_id` has reached.
    pub fn stage(&self, op_id: &str, stage: &str) {
        if let Some(e) = self.lock().get_mut(op_id) {
            e.stage = stage.to_string();
        }
    }

    /// Everything in flight, oldest first.
    pub fn list(&self) -> Vec<OperationInfo> {
        let mut v: Vec<OperationInfo> = self
            .lock()
            .iter()
            .map(|(id, e)| OperationInfo {
                op_id: id.clone(),
                method: e.method.clone(),
                target: e.target.clone(),
                stage: e.stage.clone(),
                elapsed_ms: e.started.elapsed().as_millis() as u64,
            })
            .collect();
        v.sort_by_key(|o| std::cmp::Reverse(o.elapsed_ms));
        v
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.ops.lock().remove(&self.op_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_stage_and_drop() {
        let ops = Operations::default();
        {
            let _g = ops.begin("op-1", "vm.create", "dev");
            ops.stage("op-1", "boot");
            let l = ops.list();
            assert_eq!(l.len(), 1);
            assert_eq!(
                (l[0].method.as_str(), l[0].stage.as_str()),
                ("vm.create", "boot")
            );
        }
        assert!(ops.list().is_empty(), "the guard removes the entry");
    }
}
