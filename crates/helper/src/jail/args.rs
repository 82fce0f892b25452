//! The jailer's command line and the cgroup it puts each guest in (pure).

use std::path::Path;

use banger_vmm::firecracker::{files, jailer::Jail};

/// Parent cgroup of every jailed guest (`<cgroup root>/<controller>/banger/<jail id>`
/// with cgroup v1, `<cgroup root>/banger/<jail id>` with v2).
pub const PARENT_CGROUP: &str = "banger";
/// Memory a Firecracker process may use beyond the guest's RAM (its own heap, device
/// queues, page cache of the disks it reads).
pub const MEMORY_HEADROOM_MIB: u64 = 256;
/// Tasks per jailed guest: Firecracker's API, VMM and vCPU threads, with room to spare.
pub const PIDS_MAX: u32 = 256;

/// Which cgroup hierarchy the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Controllers each mounted under `/sys/fs/cgroup/<controller>`.
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
}

impl CgroupVersion {
    /// The jailer's `--cgroup-version` value.
    pub fn arg(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

/// v2 when `root` (normally `/sys/fs/cgroup`) is the unified hierarchy itself.
pub fn detect_cgroup_version(root: &Path) -> CgroupVersion {
    if root.join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// The `--cgroup file=value` limits for a guest of `memory_mib`.
pub fn cgroup_limits(version: CgroupVersion, memory_mib: u64) -> Vec<String> {
    let bytes = (memory_mib + MEMORY_HEADROOM_MIB) * 1024 * 1024;
    let memory = match version {
        CgroupVersion::V1 => format!("memory.limit_in_bytes={bytes}"),
        CgroupVersion::V2 => format!("memory.max={bytes}"),
    };
    vec![memory, format!("pids.max={PIDS_MAX}")]
}

/// The cgroup directories the jailer creates for `jail_id`, to remove afterwards.
pub fn cgroup_dirs(root: &Path, version: CgroupVersion, jail_id: &str) -> Vec<std::path::PathBuf> {
    match version {
        CgroupVersion::V1 => ["memory", "pids"]
            .iter()
            .map(|c| root.join(c).join(PARENT_CGROUP).join(jail_id))
            .collect(),
        CgroupVersion::V2 => vec![root.join(PARENT_CGROUP).join(jail_id)],
    }
}

/// The jailer's arguments: the jail's id, exec file and chroot base, the owner's
/// uid/gid, the cgroup, and after `--` Firecracker's own API socket (relative to the
/// chroot). No `--daemonize` (the helper gives the process its own session and the
/// console log as stdout) and no `--new-pid-ns` (the pid the helper spawns is then
/// Firecracker's own, which the daemon watches).
pub fn jailer_args(
    jail: &Jail,
    firecracker: &Path,
    owner: (u32, u32),
    version: CgroupVersion,
    memory_mib: u64,
) -> Vec<String> {
    let mut a = vec![
        "--id".to_string(),
        jail.id.clone(),
        "--exec-file".into(),
        firecracker.display().to_string(),
        "--uid".into(),
        owner.0.to_string(),
        "--gid".into(),
        owner.1.to_string(),
        "--chroot-base-dir".into(),
        jail.base.display().to_string(),
        "--cgroup-version".into(),
        version.arg().into(),
        "--parent-cgroup".into(),
        PARENT_CGROUP.into(),
    ];
    for c in cgroup_limits(version, memory_mib) {
        a.push("--cgroup".into());
        a.push(c);
    }
    a.push("--".into());
    a.push("--api-sock".into());
    a.push(Path::new("/").join(files::API).display().to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_hierarchy() {
        assert_eq!(
            cgroup_limits(CgroupVersion::V2, 1024),
            ["memory.max=1342177280", "pids.max=256"]
        );
        assert_eq!(
            cgroup_limits(CgroupVersion::V1, 128)[0],
            "memory.limit_in_bytes=402653184"
        );
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_cgroup_version(d.path()), CgroupVersion::V1);
        std::fs::write(d.path().join("cgroup.controllers"), "memory pids\n").unwrap();
        assert_eq!(detect_cgroup_version(d.path()), CgroupVersion::V2);
        assert_eq!(
            cgroup_dirs(Path::new("/sys/fs/cgroup"), CgroupVersion::V1, "banger-x"),
            [
                Path::new("/sys/fs/cgroup/memory/banger/banger-x"),
                Path::new("/sys/fs/cgroup/pids/banger/banger-x")
            ]
        );
    }
}
