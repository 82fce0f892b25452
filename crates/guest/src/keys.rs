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

/// File name of a generated guest host key (see [`generate_host_key`]).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Generate a guest's ed25519 host key pair in `dir` (which must exist and be
/// private); returns the private key's path and the public key line
/// (`ssh-ed25519 AAAA…`, without a comment). The caller installs the pair in the
/// guest and removes the private half from the host.
pub fn generate_host_key(dir: &Path) -> Result<(PathBuf, String), KeyError> {
    let private = dir.join(HOST_KEY_FILE);
    let public = private.with_extension("pub");
    let _ = std::fs::remove_file(&private);
    let _ = std::fs::remove_file(&public);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", ""])
        .arg("-f")
        .arg(&private)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeyError::NoSshKeygen,
            _ => KeyError::Io {
                path: private.clone(),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(KeyError::Keygen {
            path: private,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = std::fs::read_to_string(&public).map_err(|source| KeyError::Io {
        path: public.clone(),
        source,
    })?;
    let line = host_key_line(&text).ok_or_else(|| KeyError::Keygen {
        path: public,
        stderr: "ssh-keygen wrote an unreadable public key".into(),
    })?;
    Ok((private, line))
}

/// Host key types banger pins.
const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// The `TYPE BASE64` of a public key file's text, or None if it is not exactly one
/// public key line of a known type. Guests report keys too, so the text is hostile:
/// one line, a known type, base64 of at most 2 KiB, nothing a known_hosts or
/// ssh_config reader could take for syntax.
pub fn host_key_line(text: &str) -> Option<String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let mut f = line.split_ascii_whitespace();
    let (kind, b64) = (f.next()?, f.next()?);
    let b64_ok = !b64.is_empty()
        && b64.len() <= 2048
        && b64
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
    (HOST_KEY_TYPES.contains(&kind) && b64_ok).then(|| format!("{kind} {b64}"))
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

    #[test]
    fn host_keys_are_generated_and_hostile_lines_refused() {
        let t = tempfile::tempdir().unwrap();
        let (private, line) = generate_host_key(t.path()).unwrap();
        assert!(private.exists());
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert_eq!(line.split(' ').count(), 2, "no comment: {line}");
        assert_eq!(
            host_key_line("ssh-ed25519 AAAAC3Nz root@dev\n").as_deref(),
            Some("ssh-ed25519 AAAAC3Nz")
        );
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAA",
            "ssh-ed25519 AAAA\nssh-ed25519 BBBB",
            "ssh-ed25519 AA\"AA",
            "@cert-authority * ssh-ed25519 AAAA",
        ] {
            assert_eq!(host_key_line(bad), None, "{bad:?}");
        }
        assert_eq!(
            host_key_line(&format!("ssh-rsa {}", "A".repeat(4096))),
            None
        );
    }
}
