//! External programs the helper runs as root: by absolute path only, never through
//! `PATH`, and only when nobody but root could have replaced them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::validate::plain_absolute;
use crate::HelperError;

/// Check that `path` (from the helper's config) names a program only root can have
/// written: an absolute path whose target (symlinks resolved, as for Debian's
/// alternatives) is a regular executable file owned by root and not writable by
/// group or others, in a directory with the same properties. Returns the resolved
/// path, which is what the helper then executes.
pub fn checked_tool(what: &'static str, path: &Path) -> Result<PathBuf, HelperError> {
    let refuse = |reason: String| HelperError::Tool {
        what,
        path: path.to_path_buf(),
        reason,
    };
    if !plain_absolute(path) {
        return Err(refuse(
            "it is not an absolute path (the helper never searches PATH)".into(),
        ));
    }
    let real =
        std::fs::canonicalize(path).map_err(|e| refuse(format!("cannot resolve it: {e}")))?;
    let md = std::fs::metadata(&real).map_err(|e| refuse(format!("cannot inspect it: {e}")))?;
    if !md.is_file() {
        return Err(refuse(format!("{} is not a regular file", real.display())));
    }
    if md.permissions().mode() & 0o111 == 0 {
        return Err(refuse(format!("{} is not executable", real.display())));
    }
    root_only(&real, &md).map_err(&refuse)?;
    if let Some(dir) = real.parent() {
        let dmd = std::fs::metadata(dir)
            .map_err(|e| refuse(format!("cannot inspect its directory: {e}")))?;
        root_only(dir, &dmd).map_err(&refuse)?;
    }
    Ok(real)
}

/// Whether `path` names nothing at all (not even a dangling link): the tool is not
/// installed. Anything else, even a file [`checked_tool`] refuses, is not absent.
pub fn absent(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

fn root_only(path: &Path, md: &std::fs::Metadata) -> Result<(), String> {
    if md.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root",
            path.display(),
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "{} has mode {:o}: group or others may write it",
            path.display(),
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_relative_missing_and_writable_tools() {
        let e = checked_tool("nft", Path::new("nft")).unwrap_err();
        assert!(e.to_string().contains("never searches PATH"), "{e}");
        assert!(absent(Path::new("/nonexistent/nft")));
        assert!(!absent(Path::new("/bin/sh")));
        let e = checked_tool("nft", Path::new("/nonexistent/nft")).unwrap_err();
        assert!(e.to_string().contains("cannot resolve"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tool");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = checked_tool("jailer", &p).unwrap_err();
        assert!(
            e.to_string().contains("others may write") || e.to_string().contains("not root"),
            "{e}"
        );
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                checked_tool("jailer", &p).unwrap(),
                std::fs::canonicalize(&p).unwrap()
            );
        }
        // A real system tool passes.
        if Path::new("/bin/sh").exists() {
            checked_tool("sh", Path::new("/bin/sh")).unwrap();
        }
    }
}
