//! Running the external tools this crate relies on, with errors that name the tool,
//! its exit status and the tail of what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An external tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed (or not on PATH).
    #[error("{tool} is not installed; install it (Debian: apt-get install {package}) or run `banger doctor`")]
    Missing {
        /// Program name.
        tool: String,
        /// Debian package that provides it.
        package: String,
    },
    /// It ran and failed.
    #[error("{tool} failed ({status}): {tail}")]
    Failed {
        /// Program name.
        tool: String,
        /// Exit status as text.
        status: String,
        /// Last lines of its output.
        tail: String,
    },
    /// It could not be started for another reason.
    #[error("could not run {tool}: {source}")]
    Spawn {
        /// Program name.
        tool: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `tool` as a program to run: where banger-hostcheck's `which` finds it (`PATH`,
/// then `/usr/sbin` and `/sbin`: e2fsprogs lives in `/usr/sbin`, which a non-root
/// user's `PATH` lacks on Debian, and banger's owner daemon is such a user), else its
/// bare name so the spawn error names it.
pub fn program(tool: &str) -> std::ffi::OsString {
    banger_hostcheck::which::which(tool)
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|| tool.into())
}

/// The Debian package that ships `tool`, for install hints (banger-hostcheck's table).
pub fn package_of(tool: &str) -> &'static str {
    banger_hostcheck::tools::debian_package(tool)
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// Run `cmd` to completion; Ok only on exit status 0. Returns stdout.
pub fn run(mut cmd: Command) -> Result<Vec<u8>, ToolError> {
    let tool = Path::new(cmd.get_program())
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ToolError::Missing {
                package: package_of(&tool).to_string(),
                tool: tool.clone(),
            },
            _ => ToolError::Spawn {
                tool: tool.clone(),
                source,
            },
        })?;
    if !out.status.success() {
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        return Err(ToolError::Failed {
            tool,
            status: out.status.to_string(),
            tail: tail(&all),
        });
    }
    Ok(out.stdout)
}
