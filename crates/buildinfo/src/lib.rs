//! Which build a banger binary is: version, commit, build time and target.
//!
//! The values come from `build.rs` (git and the build environment) and are the same
//! in every binary of one build, so `banger version`, `bangerd --version` and the
//! release manifest agree. The updater reads them from a staged binary's
//! `banger version --json` to record what it installed.

use serde::{Deserialize, Serialize};

#[path = "civil.rs"]
pub mod civil;

/// The release version (`X.Y.Z`, without a leading `v`).
pub const VERSION: &str = env!("BANGER_BUILD_VERSION");
/// The short git commit of the build, or `unknown` for a build without git.
pub const COMMIT: &str = env!("BANGER_BUILD_COMMIT");
/// When the build script ran (or `SOURCE_DATE_EPOCH`), RFC 3339 UTC.
pub const BUILT_AT: &str = env!("BANGER_BUILD_AT");
/// The Rust target triple the binary was built for.
pub const TARGET: &str = env!("BANGER_BUILD_TARGET");

/// The `--version` string of every banger binary: `0.1.0 (commit abc1234, built …, target)`.
pub const VERSION_LINE: &str = concat!(
    env!("BANGER_BUILD_VERSION"),
    " (commit ",
    env!("BANGER_BUILD_COMMIT"),
    ", built ",
    env!("BANGER_BUILD_AT"),
    ", ",
    env!("BANGER_BUILD_TARGET"),
    ")"
);

/// One build's identity (also the JSON of `banger version --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Release version, `X.Y.Z`.
    pub version: String,
    /// Short git commit, or `unknown`.
    pub commit: String,
    /// Build time, RFC 3339 UTC.
    pub built_at: String,
    /// Rust target triple.
    pub target: String,
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> Self {
        Self {
            version: VERSION.to_string(),
            commit: COMMIT.to_string(),
            built_at: BUILT_AT.to_string(),
            target: TARGET.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(civil::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(civil::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(civil::rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(civil::rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn constants_are_filled() {
        let b = BuildInfo::current();
        assert!(!b.version.is_empty() && !b.commit.is_empty());
        assert!(b.built_at.ends_with('Z'), "{}", b.built_at);
        assert!(VERSION_LINE.starts_with(VERSION));
    }

    /// A build from this repository's git checkout carries `git rev-parse --short HEAD`.
    #[test]
    fn commit_matches_git_head() {
        // (Not the environment: cargo also sets a build script's variables when it runs
        // the tests.)
        match env!("BANGER_BUILD_COMMIT_SOURCE") {
            "git" => {}
            other => {
                eprintln!(
                    "skipping: the commit of this build came from {other}, not git ({COMMIT})"
                );
                return;
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "--short", "HEAD"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let head = String::from_utf8_lossy(&o.stdout).trim().to_string();
                assert_eq!(COMMIT, head);
            }
            _ => panic!("built from git (commit {COMMIT}) but git rev-parse fails now"),
        }
    }
}
