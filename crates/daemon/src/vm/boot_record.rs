//! `boot.json` in a VM's state directory: when its current boot finished and how long
//! each stage took, so `vm show` can print the uptime and `timings` of a VM that
//! booted in another call (or before the daemon restarted).

use crate::app::App;
use banger_rpc::{StageTiming, VmInfo};
use serde::{Deserialize, Serialize};

/// File name inside the VM's state directory.
const FILE: &str = "boot.json";
/// Largest file accepted back (it is ours, but state files are checked too).
const MAX_BYTES: u64 = 64 * 1024;

/// What is remembered of the last successful boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Unix seconds when the boot finished.
    pub started_at: i64,
    /// The boot's stages.
    pub timings: Vec<StageTiming>,
}

/// Remember a boot that just finished (best effort: it only feeds `vm show`);
/// returns its record.
pub fn write(app: &App, id: &str, timings: &[StageTiming]) -> BootRecord {
    let rec = BootRecord {
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0),
        timings: timings.to_vec(),
    };
    let dir = app.layout.vm_dir(id);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let r = serde_json::to_vec(&rec)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, dir.join(FILE)));
    if let Err(e) = r {
        tracing::warn!(vm = %id, "recording the boot timings failed: {e}");
    }
    rec
}

/// The last boot of VM `id`, if recorded and well-formed.
pub fn read(app: &App, id: &str) -> Option<BootRecord> {
    use std::io::Read;
    let f = std::fs::File::open(app.layout.vm_dir(id).join(FILE)).ok()?;
    let mut buf = vec![];
    f.take(MAX_BYTES).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// After a call that booted the VM: remember the boot (when `info` says it runs and
/// carries the boot's stages).
pub fn after_boot(app: &App, info: &mut VmInfo) {
    if info.state == banger_model::VmState::Running && !info.timings.is_empty() {
        info.started_at = Some(write(app, &info.id, &info.timings).started_at);
    }
}

/// Fill `started_at` (while running) and, when the call did not produce its own,
/// the `timings` of the last boot.
pub fn fill(app: &App, info: &mut VmInfo) {
    let Some(b) = read(app, &info.id) else {
        return;
    };
    if info.state == banger_model::VmState::Running {
        info.started_at = Some(b.started_at);
    }
    if info.timings.is_empty() {
        info.timings = b.timings;
    }
}
