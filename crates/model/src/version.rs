//! Firecracker versions: which ones banger's backend supports. Shared by `banger
//! doctor` and the daemon's `auto` backend choice so both say the same thing.

/// Oldest Firecracker whose API has everything banger's backend sends.
pub const FIRECRACKER_MIN: Version = Version::new(1, 5, 0);
/// The Firecracker release banger's backend is tested against (its OpenAPI spec is a
/// test fixture of banger-vmm).
pub const FIRECRACKER_TESTED: Version = Version::new(1, 14, 1);

/// A `major.minor.patch` release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version in `firecracker --version` output (`Firecracker v1.14.1`, possibly
/// followed by more lines or a pre-release suffix like `v1.15.0-dev`): the first
/// whitespace-separated word that reads as `[v]X.Y[.Z]`.
pub fn parse_firecracker_version(out: &str) -> Option<Version> {
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
    /// Whether `auto` may pick Firecracker at this version.
    pub fn usable(self) -> bool {
        matches!(self, Support::Supported | Support::NewerThanTested)
    }
}

/// Classify `v` against [`FIRECRACKER_MIN`] and [`FIRECRACKER_TESTED`].
pub fn firecracker_support(v: Version) -> Support {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_classifies() {
        let v = parse_firecracker_version("Firecracker v1.14.1\n").unwrap();
        assert_eq!(v, FIRECRACKER_TESTED);
        assert_eq!(firecracker_support(v), Support::Supported);
        assert_eq!(firecracker_support(Version::new(1, 4, 0)), Support::TooOld);
        assert_eq!(
            firecracker_support(Version::new(1, 15, 0)),
            Support::NewerThanTested
        );
        assert_eq!(
            firecracker_support(Version::new(2, 0, 0)),
            Support::NewMajor
        );
        assert!(parse_firecracker_version("no version here").is_none());
    }
}
