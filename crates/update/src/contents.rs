//! `manifest.json` inside a release tarball: the build's identity and every file with
//! its size and SHA-256. It is covered by the tarball's hash, which `SHA256SUMS`
//! covers, which the release key signs; it is what the updater believes about a release.

use banger_buildinfo::BuildInfo;
use serde::{Deserialize, Serialize};

/// Its name inside the tarball's top directory (and the first entry of the tarball).
pub const CONTENTS_NAME: &str = "manifest.json";
/// Largest `manifest.json` we read.
pub const MAX_CONTENTS: u64 = 1 << 20;
/// Largest single file in a release.
pub const MAX_FILE: u64 = 256 << 20;
/// Most bytes a release may unpack to.
pub const MAX_TOTAL: u64 = 1 << 30;
/// Most files a release may hold.
const MAX_FILES: usize = 512;
/// The only contents schema this banger understands.
pub const SCHEMA: u32 = 1;
/// Files every release must carry.
pub const REQUIRED: &[&str] = &["bin/banger", "bin/bangerd", "lib/banger-agent"];

/// What is wrong with a release's `manifest.json`.
#[derive(Debug, thiserror::Error)]
pub enum ContentsError {
    /// Not JSON of the expected shape.
    #[error("the release's manifest.json is not valid: {0}")]
    Parse(String),
    /// Another schema.
    #[error("the release's manifest.json has schema {0}; this banger understands {SCHEMA}")]
    Schema(u32),
    /// Another version or target than the release was published as.
    #[error("the release's manifest.json says {field} {got:?}, the release manifest says {want:?}; refusing a mislabelled release")]
    Mismatch {
        /// Which field.
        field: &'static str,
        /// What the tarball says.
        got: String,
        /// What was expected.
        want: String,
    },
    /// A path that is not a release file name.
    #[error("the release lists {0:?}, which is not a release file path")]
    BadPath(String),
    /// A required file is missing.
    #[error("the release lacks {0}")]
    Missing(&'static str),
    /// A path listed twice.
    #[error("the release lists {0} twice")]
    Duplicate(String),
    /// A file or the whole release over its cap, or too many files.
    #[error("the release is too large: {0}")]
    TooLarge(String),
    /// A hash that is not 64 hex digits.
    #[error("the release lists {0} with a malformed sha256")]
    BadHash(String),
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path under the tarball's top directory, e.g. `bin/banger`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// A release tarball's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// Release version, `X.Y.Z`.
    pub version: String,
    /// Commit the binaries were built from.
    pub commit: String,
    /// When they were built.
    pub built_at: String,
    /// Rust target triple.
    pub target: String,
    /// Every file, in tarball order.
    pub files: Vec<FileEntry>,
}

/// Where a release file goes, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// An executable for `bin/`: `banger`, `bangerd`, `banger-helper`.
    Binary(String),
    /// The static guest agent (`lib/banger-agent`).
    Agent,
    /// A man page (`man/man1/<page>.1`).
    ManPage(String),
    /// A completion script: `completions/banger.bash`, `_banger` (zsh), `banger.fish`.
    Completion(String),
}

impl FileKind {
    /// Executables get 0755, documentation 0644.
    pub fn mode(&self) -> u32 {
        match self {
            FileKind::Binary(_) | FileKind::Agent => 0o755,
            FileKind::ManPage(_) | FileKind::Completion(_) => 0o644,
        }
    }
}

/// The kind of a release path, or `None` for a path this banger does not know (a file a
/// newer release added: it is neither unpacked nor installed by this updater).
pub fn classify(path: &str) -> Option<FileKind> {
    match path {
        "bin/banger" | "bin/bangerd" | "bin/banger-helper" => {
            Some(FileKind::Binary(path.trim_start_matches("bin/").into()))
        }
        "lib/banger-agent" => Some(FileKind::Agent),
        "completions/banger.bash" | "completions/_banger" | "completions/banger.fish" => Some(
            FileKind::Completion(path.trim_start_matches("completions/").into()),
        ),
        _ => {
            let page = path.strip_prefix("man/man1/")?;
            let stem = page.strip_suffix(".1")?;
            let ok = stem.starts_with("banger")
                && stem.len() <= 128
                && stem
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            ok.then(|| FileKind::ManPage(page.into()))
        }
    }
}

/// A relative path of plain components (no `..`, no leading `/`, no empty parts).
fn plain_path(p: &str) -> bool {
    p.len() <= 255 && p.split('/').count() <= 4 && p.split('/').all(crate::sums::plain_name)
}

/// The top directory of a release tarball.
pub fn top_dir(version: &str, target: &str) -> String {
    format!("banger-{version}-{target}")
}

impl Contents {
    /// Parse and check against the version and target the release was published as.
    pub fn parse(bytes: &[u8], version: &str, target: &str) -> Result<Self, ContentsError> {
        let c: Contents =
            serde_json::from_slice(bytes).map_err(|e| ContentsError::Parse(e.to_string()))?;
        c.validate(version, target)?;
        Ok(c)
    }

    /// The checks of [`Contents::parse`], for the release tool too.
    pub fn validate(&self, version: &str, target: &str) -> Result<(), ContentsError> {
        if self.schema != SCHEMA {
            return Err(ContentsError::Schema(self.schema));
        }
        for (field, got, want) in [
            ("version", &self.version, version),
            ("target", &self.target, target),
        ] {
            if got != want {
                return Err(ContentsError::Mismatch {
                    field,
                    got: got.chars().take(80).collect(),
                    want: want.into(),
                });
            }
        }
        let ident_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":.-+TZ".contains(c))
        };
        if !ident_ok(&self.commit) || !ident_ok(&self.built_at) {
            return Err(ContentsError::Parse(
                "commit or built_at is malformed".into(),
            ));
        }
        if self.files.len() > MAX_FILES {
            return Err(ContentsError::TooLarge(format!(
                "{} files",
                self.files.len()
            )));
        }
        let mut total: u64 = 0;
        for (i, f) in self.files.iter().enumerate() {
            if !plain_path(&f.path) || f.path == CONTENTS_NAME {
                return Err(ContentsError::BadPath(f.path.chars().take(100).collect()));
            }
            if self.files[..i].iter().any(|o| o.path == f.path) {
                return Err(ContentsError::Duplicate(f.path.clone()));
            }
            if f.size > MAX_FILE {
                return Err(ContentsError::TooLarge(format!(
                    "{} is {} bytes",
                    f.path, f.size
                )));
            }
            total = total.saturating_add(f.size);
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(ContentsError::BadHash(f.path.clone()));
            }
        }
        if total > MAX_TOTAL {
            return Err(ContentsError::TooLarge(format!("{total} bytes in all")));
        }
        for r in REQUIRED {
            if !self.files.iter().any(|f| f.path == *r) {
                return Err(ContentsError::Missing(r));
            }
        }
        Ok(())
    }

    /// The identity its binaries must report.
    pub fn build_info(&self) -> BuildInfo {
        BuildInfo {
            version: self.version.clone(),
            commit: self.commit.clone(),
            built_at: self.built_at.clone(),
            target: self.target.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "x86_64-unknown-linux-gnu";

    pub(crate) fn sample() -> Contents {
        let f = |p: &str| FileEntry {
            path: p.into(),
            size: 3,
            sha256: "ab".repeat(32),
        };
        Contents {
            schema: 1,
            version: "1.2.3".into(),
            commit: "abc1234".into(),
            built_at: "2025-01-01T00:00:00Z".into(),
            target: T.into(),
            files: vec![
                f("bin/banger"),
                f("bin/bangerd"),
                f("lib/banger-agent"),
                f("man/man1/banger-vm-run.1"),
                f("completions/_banger"),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let b = serde_json::to_vec(&c).unwrap();
        assert_eq!(Contents::parse(&b, "1.2.3", T).unwrap(), c);
        assert_eq!(c.build_info().commit, "abc1234");
    }

    #[test]
    fn mislabelled_and_malformed_are_refused() {
        let b = serde_json::to_vec(&sample()).unwrap();
        assert!(matches!(
            Contents::parse(&b, "1.2.4", T),
            Err(ContentsError::Mismatch {
                field: "version",
                ..
            })
        ));
        assert!(matches!(
            Contents::parse(&b, "1.2.3", "aarch64-unknown-linux-gnu"),
            Err(ContentsError::Mismatch {
                field: "target",
                ..
            })
        ));
        for (path, want) in [
            ("../bin/banger", "path"),
            ("/bin/banger", "path"),
            ("bin//banger", "path"),
            ("manifest.json", "path"),
            ("bin/banger", "dup"),
        ] {
            let mut c = sample();
            c.files.push(FileEntry {
                path: path.into(),
                size: 1,
                sha256: "00".repeat(32),
            });
            let e = c.validate("1.2.3", T).unwrap_err();
            match want {
                "path" => assert!(matches!(e, ContentsError::BadPath(_)), "{path}: {e}"),
                _ => assert!(matches!(e, ContentsError::Duplicate(_)), "{path}: {e}"),
            }
        }
        let mut c = sample();
        c.files.retain(|f| f.path != "bin/bangerd");
        assert!(matches!(
            c.validate("1.2.3", T),
            Err(ContentsError::Missing("bin/bangerd"))
        ));
        let mut c = sample();
        c.files[0].size = MAX_FILE + 1;
        assert!(matches!(
            c.validate("1.2.3", T),
            Err(ContentsError::TooLarge(_))
        ));
        let mut c = sample();
        c.files[0].sha256 = "AB".repeat(32);
        assert!(matches!(
            c.validate("1.2.3", T),
            Err(ContentsError::BadHash(_))
        ));
    }

    #[test]
    fn kinds() {
        assert_eq!(
            classify("bin/bangerd"),
            Some(FileKind::Binary("bangerd".into()))
        );
        assert_eq!(classify("lib/banger-agent"), Some(FileKind::Agent));
        assert_eq!(
            classify("man/man1/banger-vm.1"),
            Some(FileKind::ManPage("banger-vm.1".into()))
        );
        assert_eq!(
            classify("completions/banger.fish"),
            Some(FileKind::Completion("banger.fish".into()))
        );
        assert_eq!(classify("man/man1/evil.1"), None);
        assert_eq!(classify("man/man1/banger_x.1"), None);
        assert_eq!(classify("bin/sh"), None);
        assert_eq!(classify("lib/banger-new-thing"), None);
    }
}
