//! `vm.stats`: a VM's CPU, memory and disk use, measured on the host (`/proc` of the
//! VMM process, allocated blocks of the disks).

use super::{files, query};
use crate::app::App;
use crate::error::Result;
use banger_rpc::VmStatsResult;
use std::path::Path;
use std::time::Duration;

/// How long the CPU use is sampled over.
const CPU_SAMPLE: Duration = Duration::from_millis(500);

/// utime + stime of `pid`, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0], utime [11], stime [12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of `pid`, in bytes.
fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes the file at `path` occupies on the host (sparse disks: less than its size).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// `vm.stats`.
pub async fn stats(app: &App, name: &str) -> Result<VmStatsResult> {
    let rec = app.db(|s| s.get_vm_by_name(name))?;
    let vm_dir = app.layout.vm_dir(&rec.id);
    let pid = query::info_for(app, &rec).pid;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (mut cpu_percent, mut cpu_seconds, mut rss) = (None, None, None);
    if let Some(pid) = pid {
        let t0 = proc_cpu_ticks(pid);
        tokio::time::sleep(CPU_SAMPLE).await;
        let t1 = proc_cpu_ticks(pid);
        if let (Some(a), Some(b)) = (t0, t1) {
            cpu_percent =
                Some(((b.saturating_sub(a)) as f64 / hz) / CPU_SAMPLE.as_secs_f64() * 100.0);
            cpu_seconds = Some(b as f64 / hz);
        }
        rss = proc_rss(pid);
    }
    Ok(VmStatsResult {
        name: rec.name.to_string(),
        state: rec.state,
        cpu_percent,
        cpu_seconds,
        rss_bytes: rss,
        memory_mib: rec.memory_mib,
        overlay_bytes: allocated(&vm_dir.join(files::OVERLAY)),
        work_bytes: allocated(&vm_dir.join(files::WORK)),
        disk_mib: rec.disk_mib,
    })
}
