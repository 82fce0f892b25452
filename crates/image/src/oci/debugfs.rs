//! A debugfs script for the ownership pass: `sif`, `mknod` and `ea_set`.
//!
//! `ext4::Debugfs` covers banger's small edits; this pass needs two commands it lacks
//! (`mknod`, which only takes a name in the current directory, and `ea_set -f`) and
//! runs scripts of tens of thousands of lines, so it has its own builder. Same rules:
//! typed commands only, every path checked for characters debugfs cannot carry and
//! double-quoted, and
//! any stderr line other than the banner or an "Allocated inode" note is a failure
//! (debugfs exits 0 when commands fail).

use super::names::{encodable, quote};
use super::rootfs::RootfsError;
use std::fmt::Write as _;
use std::path::Path;

/// A script under construction.
#[derive(Debug, Default)]
pub(crate) struct Script {
    text: String,
    lines: usize,
}

fn check(p: &str) -> Result<&str, RootfsError> {
    if p.is_empty() || !p.starts_with('/') || !encodable(p) {
        return Err(RootfsError::Unencodable(p.to_string()));
    }
    Ok(p)
}

impl Script {
    /// Set one inode field (`mode`, `uid`, `gid`, `mtime`...) of `path`.
    pub(crate) fn sif(&mut self, path: &str, field: &str, value: &str) -> Result<(), RootfsError> {
        let p = check(path)?;
        let _ = writeln!(self.text, "sif {} {field} {value}", quote(p));
        self.lines += 1;
        Ok(())
    }

    /// Create a device node at `path` (whose parent must exist). debugfs's `mknod`
    /// links its argument verbatim into the current directory (a name with slashes
    /// would corrupt the directory), so change into the parent first.
    pub(crate) fn mknod(
        &mut self,
        path: &str,
        block: bool,
        major: u32,
        minor: u32,
    ) -> Result<(), RootfsError> {
        let p = check(path)?;
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let dir = if dir.is_empty() { "/" } else { dir };
        let kind = if block { 'b' } else { 'c' };
        let _ = writeln!(
            self.text,
            "cd {}\nmknod {} {kind} {major} {minor}\ncd /",
            quote(dir),
            quote(name)
        );
        self.lines += 3;
        Ok(())
    }

    /// Set xattr `name` on `path` to the content of host file `value`.
    pub(crate) fn ea_set_file(
        &mut self,
        path: &str,
        name: &str,
        value: &Path,
    ) -> Result<(), RootfsError> {
        let p = check(path)?;
        let v = value
            .to_str()
            .ok_or_else(|| RootfsError::Unencodable(value.display().to_string()))?;
        check(v)?;
        if name.is_empty() || !encodable(name) {
            return Err(RootfsError::Unencodable(name.to_string()));
        }
        let _ = writeln!(
            self.text,
            "ea_set -f {} {} {}",
            quote(v),
            quote(p),
            quote(name)
        );
        self.lines += 1;
        Ok(())
    }

    /// Number of commands.
    pub(crate) fn lines(&self) -> usize {
        self.lines
    }

    /// Run the script against `image` (not in use by anything).
    pub(crate) fn apply(&self, image: &Path) -> Result<(), RootfsError> {
        if self.text.is_empty() {
            return Ok(());
        }
        crate::ext4::run_script(image, &self.text, "oci-fixups.debugfs").map_err(|e| match e {
            crate::ext4::Ext4Error::Debugfs { image, errors } => {
                RootfsError::Debugfs { image, errors }
            }
            other => RootfsError::Ext4(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_lines_and_refuses_bad_paths() {
        let mut s = Script::default();
        s.mknod("/dev/null", false, 1, 3).unwrap();
        s.mknod("/sda", true, 8, 0).unwrap();
        s.sif("/dev/null", "mode", "020666").unwrap();
        assert_eq!(
            s.text,
            "cd \"/dev\"\nmknod \"null\" c 1 3\ncd /\ncd \"/\"\nmknod \"sda\" b 8 0\ncd /\nsif \"/dev/null\" mode 020666\n"
        );
        // Spaces, quotes and backslashes travel quoted; control characters never.
        s.sif("/a b\\x2d\"q'", "uid", "0").unwrap();
        assert!(
            s.text.ends_with("sif \"/a b\\x2d\"\"q'\" uid 0\n"),
            "{}",
            s.text
        );
        assert!(s.sif("/a\nrm /etc", "uid", "0").is_err());
        assert!(s.sif("/a\tb", "uid", "0").is_err());
        assert!(s
            .ea_set_file("/a", "user.x\ny", Path::new("/tmp/v"))
            .is_err());
        assert_eq!(s.lines(), 8);
    }
}
