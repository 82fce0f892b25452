//! Running a tool for its output with a deadline: a wedged binary (a `--version` that
//! waits on a lock, a FUSE mount that hangs) must not hang the daemon or `doctor`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--version` may take before the binary is called broken.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Most output read from a tool (a version line is tiny; this bounds a chatty one).
pub const MAX_OUTPUT: u64 = 64 * 1024;

/// Why a tool gave no usable output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    /// It could not be started.
    #[error("cannot run {}: {reason}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error, as text.
        reason: String,
    },
    /// It did not finish in time and was killed.
    #[error("{} {args} did not finish within {timeout:?}", path.display())]
    Timeout {
        /// The binary.
        path: PathBuf,
        /// Its arguments, joined.
        args: String,
        /// The deadline.
        timeout: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{} {args} exited with {status}", path.display())]
    Failed {
        /// The binary.
        path: PathBuf,
        /// Its arguments, joined.
        args: String,
        /// Exit status as text.
        status: String,
    },
}

/// Run `bin args…` with no stdin, wait at most `timeout`, and return its stdout
/// (lossily decoded, at most [`MAX_OUTPUT`] bytes). Blocking: call it from a
/// blocking thread in async code.
pub fn output(bin: &Path, args: &[&str], timeout: Duration) -> Result<String, RunError> {
    let joined = args.join(" ");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RunError::Spawn {
            path: bin.to_path_buf(),
            reason: e.to_string(),
        })?;
    // Read on a thread so a tool that fills the pipe cannot block its own exit.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stdout {
            let _ = (&mut s).take(MAX_OUTPUT).read_to_end(&mut buf);
            // Drain the rest so the tool is never blocked on a full pipe.
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(RunError::Timeout {
                    path: bin.to_path_buf(),
                    args: joined,
                    timeout,
                });
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(RunError::Failed {
            path: bin.to_path_buf(),
            args: joined,
            status: status.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `bin --version` within [`VERSION_TIMEOUT`].
pub fn version(bin: &Path) -> Result<String, RunError> {
    output(bin, &["--version"], VERSION_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_timeout_and_failure() {
        let sh = Path::new("/bin/sh");
        assert_eq!(
            output(sh, &["-c", "echo hi"], VERSION_TIMEOUT).unwrap(),
            "hi\n"
        );
        let e = output(sh, &["-c", "sleep 5"], Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        let e = output(sh, &["-c", "exit 3"], VERSION_TIMEOUT).unwrap_err();
        assert!(matches!(e, RunError::Failed { .. }), "{e}");
        let e = output(Path::new("/nonexistent/x"), &[], VERSION_TIMEOUT).unwrap_err();
        assert!(matches!(e, RunError::Spawn { .. }), "{e}");
    }

    #[test]
    fn output_is_capped() {
        let out = output(
            Path::new("/bin/sh"),
            &["-c", "head -c 1000000 /dev/zero"],
            VERSION_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.len() as u64, MAX_OUTPUT);
    }
}
