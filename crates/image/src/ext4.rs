//! ext4 files without mounting: `mkfs.ext4 [-d DIR]` creates (and fills) them, and
//! `debugfs -w` scripts make small edits (a key file, a directory, an owner).
//!
//! debugfs exits 0 even when a command fails and reports on stderr instead, so
//! [`Debugfs::apply`] treats any stderr line that is not its banner or an
//! "Allocated inode" note as a failure.

use crate::run::{run, ToolError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an ext4 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// mkfs.ext4 or debugfs failed to run or exited non-zero.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// debugfs reported command failures on stderr.
    #[error("debugfs could not edit {image}: {errors}")]
    Debugfs {
        /// The image being edited.
        image: PathBuf,
        /// The error lines it printed.
        errors: String,
    },
    /// A guest path cannot be expressed in a debugfs script.
    #[error("guest path {0:?} contains whitespace, quotes or control characters that debugfs cannot encode")]
    BadPath(String),
    /// Creating the image file or the script failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Create a sparse ext4 image of `size_mib` MiB at `path`, optionally populated from
/// `source` (owners and modes are copied from the host tree as they are).
pub fn mkfs(
    path: &Path,
    size_mib: u64,
    label: &str,
    source: Option<&Path>,
) -> Result<(), Ext4Error> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| Ext4Error::Io {
            what: "create disk file",
            path: path.into(),
            source,
        })?;
    f.set_len(size_mib * 1024 * 1024)
        .map_err(|source| Ext4Error::Io {
            what: "size disk file",
            path: path.into(),
            source,
        })?;
    drop(f);
    let mut cmd = Command::new(crate::run::program("mkfs.ext4"));
    // Lazy init keeps creation in milliseconds; -m 0: no root reserve on a VM's own disk.
    cmd.args(["-q", "-F", "-m", "0", "-L", label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"]);
    if let Some(dir) = source {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(path);
    run(cmd)?;
    Ok(())
}

/// A debugfs edit script, built from typed commands so no caller writes raw script text.
#[derive(Debug, Default)]
pub struct Debugfs {
    script: String,
}

/// An absolute path without control characters (debugfs reads its script line by
/// line), double-quoted for the script (libss takes everything else literally inside
/// quotes, a doubled `"` being one quote). Same rule as `oci::names::encodable`.
fn check_path(p: &str) -> Result<String, Ext4Error> {
    if p.is_empty() || !p.starts_with('/') || p.chars().any(char::is_control) {
        return Err(Ext4Error::BadPath(p.to_string()));
    }
    Ok(format!("\"{}\"", p.replace('"', "\"\"")))
}

impl Debugfs {
    /// Start an empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Create directory `path` with `mode` (permission bits) owned by uid/gid.
    pub fn mkdir(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<&mut Self, Ext4Error> {
        let p = check_path(path)?;
        let _ = writeln!(self.script, "mkdir {p}");
        self.owner_mode(&p, 0o040000 | mode, uid, gid);
        Ok(self)
    }

    /// Copy host file `src` to guest `path` with `mode` owned by uid/gid.
    pub fn write(
        &mut self,
        src: &Path,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<&mut Self, Ext4Error> {
        let p = check_path(path)?;
        let s = src
            .to_str()
            .ok_or_else(|| Ext4Error::BadPath(src.display().to_string()))?;
        let s = check_path(s)?;
        let _ = writeln!(self.script, "write {s} {p}");
        self.owner_mode(&p, 0o100000 | mode, uid, gid);
        Ok(self)
    }

    /// Remove the file at `path` (which must exist).
    pub fn rm(&mut self, path: &str) -> Result<&mut Self, Ext4Error> {
        let p = check_path(path)?;
        let _ = writeln!(self.script, "rm {p}");
        Ok(self)
    }

    /// Set owner and full mode (including file type bits) of an existing path.
    pub fn set_owner(
        &mut self,
        path: &str,
        full_mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<&mut Self, Ext4Error> {
        let p = check_path(path)?;
        self.owner_mode(&p, full_mode, uid, gid);
        Ok(self)
    }

    fn owner_mode(&mut self, p: &str, full_mode: u32, uid: u32, gid: u32) {
        let _ = writeln!(self.script, "sif {p} mode 0{full_mode:o}");
        let _ = writeln!(self.script, "sif {p} uid {uid}");
        let _ = writeln!(self.script, "sif {p} gid {gid}");
    }

    /// The script text (for tests and logs).
    pub fn text(&self) -> &str {
        &self.script
    }

    /// Apply the script to `image` (which must not be in use by a running VM).
    pub fn apply(&self, image: &Path) -> Result<(), Ext4Error> {
        run_script(image, &self.script, "debugfs")
    }
}

/// Run debugfs script `text` against `image` (not in use by anything). The script file
/// sits beside the image as `<image>.<tag>` while it runs. debugfs exits 0 even when a
/// command fails, so any stderr line that is not its banner or an "Allocated inode"
/// note is a failure.
pub fn run_script(image: &Path, text: &str, tag: &str) -> Result<(), Ext4Error> {
    let mut script_path = image.as_os_str().to_owned();
    script_path.push(format!(".{tag}"));
    let script_path = PathBuf::from(script_path);
    std::fs::write(&script_path, text).map_err(|source| Ext4Error::Io {
        what: "write debugfs script",
        path: script_path.clone(),
        source,
    })?;
    let out = Command::new(crate::run::program("debugfs"))
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_file(&script_path);
    let out = out.map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Ext4Error::Tool(ToolError::Missing {
            tool: "debugfs".into(),
            package: "e2fsprogs".into(),
        }),
        _ => Ext4Error::Io {
            what: "run debugfs on",
            path: image.into(),
            source,
        },
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty() || l.starts_with("debugfs ") || l.starts_with("Allocated inode"))
        })
        .take(8)
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(Ext4Error::Debugfs {
            image: image.into(),
            errors: errors.join(" | "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_e2fsprogs() -> bool {
        Command::new("mkfs.ext4").arg("-V").output().is_ok()
    }

    #[test]
    fn refuses_unencodable_paths() {
        let mut d = Debugfs::new();
        for bad in ["relative", "/a\tb", "/a\nb", ""] {
            assert!(
                matches!(d.mkdir(bad, 0o700, 0, 0), Err(Ext4Error::BadPath(_))),
                "{bad:?}"
            );
        }
        assert!(d.text().is_empty());
    }

    #[test]
    fn edits_a_real_image_and_reports_failures() {
        if !have_e2fsprogs() {
            eprintln!("skipping: e2fsprogs not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.ext4");
        mkfs(&img, 16, "banger-test", None).unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "ssh-ed25519 AAAA test\n").unwrap();
        let mut d = Debugfs::new();
        d.mkdir("/.ssh", 0o700, 0, 0).unwrap();
        d.write(&key, "/.ssh/authorized_keys", 0o600, 1000, 1000)
            .unwrap();
        d.apply(&img).unwrap();
        let out = Command::new("debugfs")
            .args(["-R", "stat /.ssh/authorized_keys"])
            .arg(&img)
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&out.stdout);
        assert!(stat.contains("Mode:  0600"), "{stat}");
        assert!(stat.contains("User:  1000"), "{stat}");
        // Creating the same directory again is an error debugfs only prints.
        let mut again = Debugfs::new();
        again.mkdir("/.ssh", 0o700, 0, 0).unwrap();
        assert!(matches!(again.apply(&img), Err(Ext4Error::Debugfs { .. })));
        // mkfs refuses to clobber an existing file.
        assert!(mkfs(&img, 16, "x", None).is_err());
    }
}
