//! When banger may use Firecracker: one policy for the daemon (`--vmm auto` and
//! `--vmm firecracker`) and `banger doctor`, so both say the same thing.
//!
//! Firecracker is usable when its binary is installed, reports a version within the
//! supported range, and KVM is known to boot guests here (Firecracker has no software
//! emulation).

use crate::accel::Accel;
use crate::{run, which};
use banger_model::version::Version;
use std::path::PathBuf;

/// Oldest Firecracker whose API has everything banger's backend sends.
pub const FIRECRACKER_MIN: Version = Version::new(1, 5, 0);
/// The Firecracker release banger's backend is tested against (its OpenAPI spec is a
/// test fixture of banger-vmm).
pub const FIRECRACKER_TESTED: Version = Version::new(1, 14, 1);

/// The version in `firecracker --version` output (`Firecracker v1.14.1`, possibly
/// followed by more lines or a pre-release suffix like `v1.15.0-dev`): the first
/// whitespace-separated word that reads as `[v]X.Y[.Z]`.
pub fn parse_version(out: &str) -> Option<Version> {
    out.split_whitespace().find_map(|w| {
        let w = w.strip_prefix('v').unwrap_or(w);
        let core = w.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = match it.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Version::new(major, minor, patch))
    })
}

/// Where a Firecracker version stands against what banger supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// At least [`FIRECRACKER_MIN`] and at most [`FIRECRACKER_TESTED`].
    Supported,
    /// Same major as tested, newer than tested: the API only grows within a major
    /// version, so it should work.
    NewerThanTested,
    /// Older than [`FIRECRACKER_MIN`]: lacks API banger uses.
    TooOld,
    /// A newer major version: may have removed or changed API banger uses.
    NewMajor,
}

impl Support {
    /// Whether banger may use Firecracker at this version.
    pub fn usable(self) -> bool {
        matches!(self, Support::Supported | Support::NewerThanTested)
    }
}

/// Classify `v` against [`FIRECRACKER_MIN`] and [`FIRECRACKER_TESTED`].
pub fn support(v: Version) -> Support {
    if v < FIRECRACKER_MIN {
        Support::TooOld
    } else if v.major > FIRECRACKER_TESTED.major {
        Support::NewMajor
    } else if v > FIRECRACKER_TESTED {
        Support::NewerThanTested
    } else {
        Support::Supported
    }
}

/// What was found of the Firecracker binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Not installed (or the configured path is not an executable).
    Missing {
        /// The configured name or path (`BANGER_FIRECRACKER`, default `firecracker`).
        binary: String,
    },
    /// Installed, but `--version` failed or printed no version.
    Broken {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Installed at this version.
    Found {
        /// The binary.
        path: PathBuf,
        /// Its version.
        version: Version,
    },
}

/// Find `binary` and ask its version (blocking, at most [`run::VERSION_TIMEOUT`]).
pub fn probe(binary: &str) -> Probe {
    let Some(path) = which::which(binary) else {
        return Probe::Missing {
            binary: binary.to_string(),
        };
    };
    match run::version(&path) {
        Err(e) => Probe::Broken {
            reason: e.to_string(),
            path,
        },
        Ok(out) => match parse_version(&out) {
            Some(version) => Probe::Found { path, version },
            None => {
                let first = out.lines().next().unwrap_or("").trim().to_string();
                Probe::Broken {
                    reason: format!(
                        "{} --version printed no version ({first:?})",
                        path.display()
                    ),
                    path,
                }
            }
        },
    }
}

/// Why Firecracker cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// The binary is not installed.
    #[error("firecracker is not installed ({0} is not an executable on PATH, /usr/sbin, /sbin or /usr/local/bin)")]
    Missing(String),
    /// The binary does not report a version.
    #[error("firecracker is installed but unusable ({0})")]
    Broken(String),
    /// The version is outside the supported range.
    #[error("firecracker v{0} is not supported (needs v{FIRECRACKER_MIN} or newer within major {major}; tested v{FIRECRACKER_TESTED})", major = FIRECRACKER_TESTED.major)]
    Unsupported(Version),
    /// KVM does not boot guests here.
    #[error(
        "KVM does not boot guests on this host (the accelerator is tcg), and Firecracker needs KVM"
    )]
    NoKvm,
    /// Nobody has checked KVM yet (doctor before the first VM start).
    #[error("KVM has not been verified yet (the first VM start probes it), and Firecracker needs working KVM")]
    KvmUnverified,
}

/// The policy: `Ok(version)` when Firecracker may run guests here. `accel` is the
/// accelerator verdict, `None` when not known yet.
pub fn usable(probe: &Probe, accel: Option<Accel>) -> Result<Version, Unusable> {
    let version = match probe {
        Probe::Missing { binary } => return Err(Unusable::Missing(binary.clone())),
        Probe::Broken { reason, .. } => return Err(Unusable::Broken(reason.clone())),
        Probe::Found { version, .. } => *version,
    };
    if !support(version).usable() {
        return Err(Unusable::Unsupported(version));
    }
    match accel {
        Some(Accel::Kvm) => Ok(version),
        Some(Accel::Tcg) => Err(Unusable::NoKvm),
        None => Err(Unusable::KvmUnverified),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_classifies() {
        let v = parse_version("Firecracker v1.14.1\n").unwrap();
        assert_eq!(v, FIRECRACKER_TESTED);
        assert_eq!(support(v), Support::Supported);
        assert_eq!(support(Version::new(1, 4, 0)), Support::TooOld);
        assert_eq!(support(Version::new(1, 15, 0)), Support::NewerThanTested);
        assert_eq!(support(Version::new(2, 0, 0)), Support::NewMajor);
        assert!(parse_version("no version here").is_none());
        assert_eq!(
            parse_version("Firecracker v1.15.0-dev\nmore"),
            Some(Version::new(1, 15, 0))
        );
        assert_eq!(parse_version("1.7"), Some(Version::new(1, 7, 0)));
        assert!(parse_version("1.2.3.4").is_none());
    }

    #[test]
    fn policy() {
        let found = |v| Probe::Found {
            path: "/usr/bin/firecracker".into(),
            version: v,
        };
        let ok = found(FIRECRACKER_TESTED);
        assert_eq!(usable(&ok, Some(Accel::Kvm)), Ok(FIRECRACKER_TESTED));
        assert_eq!(usable(&ok, Some(Accel::Tcg)), Err(Unusable::NoKvm));
        assert_eq!(usable(&ok, None), Err(Unusable::KvmUnverified));
        let old = found(Version::new(1, 0, 0));
        assert!(matches!(
            usable(&old, Some(Accel::Kvm)),
            Err(Unusable::Unsupported(_))
        ));
        let missing = Probe::Missing {
            binary: "firecracker".into(),
        };
        assert!(matches!(
            usable(&missing, Some(Accel::Kvm)),
            Err(Unusable::Missing(_))
        ));
        assert!(Unusable::Unsupported(Version::new(1, 0, 0))
            .to_string()
            .contains("v1.0.0 is not supported"));
    }

    #[test]
    fn probe_reads_a_fake_binary() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("firecracker");
        // A script just written can be "busy" for a moment while another test's
        // fork still holds the write descriptor: retry that case only.
        let run = |script: &str| {
            std::fs::write(&f, script).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            for _ in 0..50 {
                match probe(f.to_str().unwrap()) {
                    Probe::Broken { reason, .. } if reason.contains("busy") => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    other => return other,
                }
            }
            panic!("{} stayed busy", f.display());
        };
        assert_eq!(
            run("#!/bin/sh\necho 'Firecracker v1.14.1'\n"),
            Probe::Found {
                path: f.clone(),
                version: FIRECRACKER_TESTED
            }
        );
        assert!(matches!(
            run("#!/bin/sh\necho nonsense\n"),
            Probe::Broken { .. }
        ));
        assert!(matches!(
            probe("/nonexistent/firecracker"),
            Probe::Missing { .. }
        ));
    }
}
