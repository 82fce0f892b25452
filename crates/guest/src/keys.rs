//! banger's ssh identity: one ed25519 key pair per banger installation.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the key could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// ssh-keygen is missing.
    #[error("ssh-keygen is not installed; install it (Debian: apt-get install openssh-client)")]
    NoSshKeygen,
    /// ssh-keygen failed.
    #[error("ssh-keygen failed to create {path}: {stderr}")]
    Keygen {
        /// Key path.
        path: PathBuf,
        /// Its error output.
        stderr: String,
    },
    /// Reading or preparing the key files failed.
    #[error("ssh key {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

/// Ensure the key pair at `private` (+ `.pub`) exists; return the public key line.
pub fn ensure(private: &Path) -> Result<String, KeyError> {
    let public = private.with_extension("pub");
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    if !private.exists() || !public.exists() {
        if let Some(dir) = private.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let _ = std::fs::remove_file(private);
        let _ = std::fs::remove_file(&public);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger"])
            .arg("-f")
            .arg(private)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => KeyError::NoSshKeygen,
                _ => KeyError::Io {
                    path: private.into(),
                    source: e,
                },
            })?;
        if !out.status.success() {
            return Err(KeyError::Keygen {
                path: private.into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    let line = std::fs::read_to_string(&public).map_err(io(&public))?;
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("ssh/id_ed25519");
        let a = ensure(&k).unwrap();
        assert!(a.starts_with("ssh-ed25519 "), "{a}");
        assert_eq!(ensure(&k).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
