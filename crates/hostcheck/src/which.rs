//! Finding executables the way banger runs them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Directories searched after `$PATH`: root's tools live there, and a user's (or a
/// daemon's) `$PATH` often lacks them.
pub const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/bin"];

/// Whether `p` is a regular file with an execute bit (following symlinks, as `exec`
/// does).
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where `bin` is: itself when it contains a `/` (and is executable), otherwise the
/// first executable `bin` on `$PATH`, then in [`EXTRA_DIRS`].
pub fn which(bin: &str) -> Option<PathBuf> {
    if bin.is_empty() {
        return None;
    }
    if bin.contains('/') {
        return Some(PathBuf::from(bin)).filter(|p| is_executable(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_refuses_non_executables() {
        assert!(which("sh").is_some(), "every host has sh");
        assert_eq!(which("banger-no-such-tool-xyz"), None);
        assert_eq!(which(""), None);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("plain");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(which(f.to_str().unwrap()), None, "not executable");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(which(f.to_str().unwrap()), Some(f));
    }
}
