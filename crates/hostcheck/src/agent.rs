//! The guest agent binary: where banger finds it and whether it can be the initrd's
//! init.
//!
//! Where: `BANGER_AGENT` when set, otherwise `../lib/banger/banger-agent` relative to
//! the running binary's directory. That one rule covers the system install
//! (`/usr/local/bin/bangerd` → `/usr/local/lib/banger/banger-agent`) and a source
//! tree (`target/release/bangerd` → `target/lib/banger/banger-agent`, where `make
//! agent` installs the static build). Cargo never writes `target/lib/`, so a plain
//! `cargo build --release`, which would build a dynamically linked agent into
//! `target/release/`, cannot replace the static one banger uses.

use crate::elf::{self, ElfError};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Environment variable naming the agent binary explicitly.
pub const ENV: &str = "BANGER_AGENT";
/// The agent's path relative to the directory holding `banger`/`bangerd`.
pub const RELATIVE_TO_BIN: &str = "../lib/banger/banger-agent";
/// Used when the running binary's own path is unknown.
pub const FALLBACK: &str = "/usr/local/lib/banger/banger-agent";
/// Largest agent banger reads (it is a few MiB; this bounds a wrong path).
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;

/// How to get a usable agent, for error messages.
pub const BUILD_HINT: &str = "build it with `make agent` (static: cargo build -p banger-agent --profile guest --target x86_64-unknown-linux-gnu with -C target-feature=+crt-static; the Makefile installs it as target/lib/banger/banger-agent), or point BANGER_AGENT at a static banger-agent";

/// Where the agent was looked for, and why there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The path.
    pub path: PathBuf,
    /// `BANGER_AGENT` or `beside banger` (for messages).
    pub from: &'static str,
}

/// The agent path by the rule above. `env` is the value of `BANGER_AGENT` (empty
/// means unset) and `exe` the running binary's path.
pub fn locate_with(env: Option<&str>, exe: Option<&Path>) -> Located {
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return Located {
            path: PathBuf::from(p),
            from: ENV,
        };
    }
    let path = exe
        .and_then(Path::parent)
        .map(|d| normalize(&d.join(RELATIVE_TO_BIN)))
        .unwrap_or_else(|| PathBuf::from(FALLBACK));
    Located {
        path,
        from: "the lib/banger directory beside banger's binaries",
    }
}

/// [`locate_with`] for this process.
pub fn locate() -> Located {
    let env = std::env::var(ENV).ok();
    let exe = std::env::current_exe().ok();
    locate_with(env.as_deref(), exe.as_deref())
}

/// `a/b/../c` → `a/c`, textually (the binary's directory is real; the result is only
/// shown to users and opened).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Why the agent cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// Path tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is larger than any agent build.
    #[error("{} is larger than {MAX_SIZE} bytes: not a banger-agent", path.display())]
    TooLarge {
        /// Path tried.
        path: PathBuf,
    },
    /// It needs a dynamic loader, which the initrd does not have.
    #[error("{} is dynamically linked: it is also the initrd's init, where no libc exists", path.display())]
    Dynamic {
        /// Path tried.
        path: PathBuf,
    },
    /// It is not an x86-64 ELF executable.
    #[error("{}: {source}", path.display())]
    Elf {
        /// Path tried.
        path: PathBuf,
        /// What is wrong with its headers.
        source: ElfError,
    },
}

/// Check that `path` is a static x86-64 executable (reads at most [`MAX_SIZE`]).
pub fn check(path: &Path) -> Result<(), AgentError> {
    let read = |source| AgentError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    f.take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(AgentError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    match elf::is_static(&bytes) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AgentError::Dynamic {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(AgentError::Elf {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_lib_beside_the_binary() {
        let l = locate_with(Some("/x/agent"), Some(Path::new("/usr/local/bin/bangerd")));
        assert_eq!(l.path, Path::new("/x/agent"));
        assert_eq!(l.from, ENV);
        let l = locate_with(Some(""), Some(Path::new("/usr/local/bin/bangerd")));
        assert_eq!(l.path, Path::new("/usr/local/lib/banger/banger-agent"));
        let l = locate_with(None, Some(Path::new("/src/banger/target/release/bangerd")));
        assert_eq!(
            l.path,
            Path::new("/src/banger/target/lib/banger/banger-agent")
        );
        let l = locate_with(None, None);
        assert_eq!(l.path, Path::new(FALLBACK));
    }

    #[test]
    fn dynamic_and_missing_agents_are_refused() {
        match check(Path::new("/bin/ls")) {
            Err(AgentError::Dynamic { .. }) => {}
            other => panic!("/bin/ls must be refused as dynamic: {other:?}"),
        }
        assert!(matches!(
            check(Path::new("/nonexistent/banger-agent")),
            Err(AgentError::Read { .. })
        ));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("agent");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(matches!(check(&f), Err(AgentError::Elf { .. })));
    }
}
