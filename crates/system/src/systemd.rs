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
pub fn is_active(unit: &str) -> String {
    let Some(bin) = systemctl_path() else {
        return "unknown (no systemctl)".into();
    };
    Command::new(bin)
        .args(["is-active", unit])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
