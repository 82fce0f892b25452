//! Talking to systemd: is it PID 1, and `systemctl` by absolute path.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SystemError;

/// Whether systemd runs this host (`sd_booted()`'s test: `/run/systemd/system` exists).
pub fn is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `systemctl`, from the places Debian and others install it (never `PATH`).
pub fn systemctl_path() -> Option<PathBuf> {
    ["/usr/bin/systemctl", "/bin/systemctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Run `systemctl args...`; its output on success.
pub fn systemctl(args: &[&str]) -> Result<String, SystemError> {
    let bin = systemctl_path().ok_or(SystemError::NoSystemd("systemctl"))?;
    let out = Command::new(&bin)
        .args(args)
        .output()
        .map_err(crate::error::io("run", &bin))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SystemError::Systemctl {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `systemctl is-active UNIT` (`active`, `inactive`, `failed`...; never an error).
///
/// A user other than root asks systemd over the D-Bus system bus, which hosts
/// without D-Bus (Debian's minimal images, banger's own guests) do not have: then
/// `systemctl` says nothing on stdout, and the unit's cgroup, which everyone may
/// read, tells whether it runs (`active (its cgroup has N processes)`).
pub fn is_active(unit: &str) -> String {
    let Some(bin) = systemctl_path() else {
        return "unknown (no systemctl)".into();
    };
    let asked = Command::new(bin).args(["is-active", unit]).output();
    let (state, why) = match asked {
        Ok(o) => (
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        ),
        Err(e) => (String::new(), e.to_string()),
    };
    if !state.is_empty() {
        return state;
    }
    match cgroup_processes(Path::new("/sys/fs/cgroup"), unit) {
        Some(n) if n > 0 => format!("active (its cgroup has {n} processes)"),
        Some(_) => "inactive (its cgroup is empty)".into(),
        None if why.is_empty() => "unknown (systemctl said nothing)".into(),
        None => format!("unknown (systemctl: {why})"),
    }
}

/// How many processes the system service `unit` has, from its cgroup below
/// `cgroup_root` (v2: `system.slice/UNIT`, v1: `systemd/system.slice/UNIT`); `None`
/// when there is no such cgroup.
pub fn cgroup_processes(cgroup_root: &Path, unit: &str) -> Option<usize> {
    if unit.contains('/') || unit.starts_with('.') {
        return None;
    }
    ["system.slice", "systemd/system.slice"]
        .iter()
        .map(|slice| cgroup_root.join(slice).join(unit).join("cgroup.procs"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|procs| procs.lines().filter(|l| !l.trim().is_empty()).count())
}

/// `active`, or what [`is_active`] makes of a unit's cgroup when systemd cannot be
/// asked (`active (its cgroup has N processes)`).
pub fn is_active_state(state: &str) -> bool {
    state == "active" || state.starts_with("active (")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_units_cgroup_tells_whether_it_runs() {
        let d = tempfile::tempdir().unwrap();
        let v2 = d.path().join("system.slice/bangerd.service");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.procs"), "324\n330\n").unwrap();
        assert_eq!(cgroup_processes(d.path(), "bangerd.service"), Some(2));
        let v1 = d.path().join("systemd/system.slice/bangerd-root.service");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cgroup.procs"), "").unwrap();
        assert_eq!(cgroup_processes(d.path(), "bangerd-root.service"), Some(0));
        assert_eq!(cgroup_processes(d.path(), "other.service"), None);
        assert_eq!(cgroup_processes(d.path(), "../bangerd.service"), None);
        assert!(is_active_state("active"));
        assert!(is_active_state("active (its cgroup has 2 processes)"));
        assert!(!is_active_state("inactive (its cgroup is empty)"));
        assert!(!is_active_state("activating"));
        assert!(!is_active_state(""));
    }
}
