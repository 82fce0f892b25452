//! Which release to install: the newest one, unless `--to` names one; a downgrade only
//! when `--to` names it explicitly.

use crate::manifest::Release;
use semver::Version;

/// What to do, given the installed version and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install this newer release.
    Upgrade(Release),
    /// Install this older release (only when `--to` named it).
    Downgrade(Release),
    /// Nothing newer is published (the installed one may even be newer than the newest
    /// published, e.g. a development build).
    UpToDate {
        /// The newest published release, if any.
        latest: Option<Version>,
    },
    /// `--to` names the version that is installed.
    AlreadyInstalled,
}

/// Why no decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `--to` names a version the manifest does not list for this target.
    #[error("release {want} is not published for this machine (available: {available}); pick one of those with --to")]
    NotPublished {
        /// Requested version.
        want: Version,
        /// What is published, newest first.
        available: String,
    },
}

/// Decide. `releases` are the manifest's releases for this target; pre-releases are
/// picked only when named with `to`.
pub fn decide(
    current: &Version,
    releases: &[Release],
    to: Option<&Version>,
) -> Result<Decision, PolicyError> {
    match to {
        Some(want) => {
            let Some(r) = releases.iter().find(|r| &r.version == want) else {
                let mut v: Vec<&Release> = releases.iter().collect();
                v.sort_by(|a, b| b.version.cmp(&a.version));
                let available = if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter()
                        .take(10)
                        .map(|r| format!("v{}", r.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(PolicyError::NotPublished {
                    want: want.clone(),
                    available,
                });
            };
            Ok(match r.version.cmp(current) {
                std::cmp::Ordering::Greater => Decision::Upgrade(r.clone()),
                std::cmp::Ordering::Less => Decision::Downgrade(r.clone()),
                std::cmp::Ordering::Equal => Decision::AlreadyInstalled,
            })
        }
        None => {
            let latest = releases
                .iter()
                .filter(|r| r.version.pre.is_empty())
                .max_by(|a, b| a.version.cmp(&b.version));
            match latest {
                Some(r) if &r.version > current => Ok(Decision::Upgrade(r.clone())),
                other => Ok(Decision::UpToDate {
                    latest: other.map(|r| r.version.clone()),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Artifact;

    fn rel(v: &str) -> Release {
        let a = Artifact {
            url: reqwest::Url::parse("https://x.example/a").unwrap(),
            size: 1,
        };
        Release {
            version: Version::parse(v).unwrap(),
            commit: String::new(),
            built_at: String::new(),
            target: "t".into(),
            tarball: a.clone(),
            sums: a.clone(),
            signature: a,
        }
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn newest_wins_and_semver_orders_numerically() {
        let rs = [rel("0.9.0"), rel("0.10.0"), rel("0.2.0")];
        match decide(&v("0.9.0"), &rs, None).unwrap() {
            Decision::Upgrade(r) => assert_eq!(r.version, v("0.10.0")),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn up_to_date_and_newer_than_published() {
        let rs = [rel("0.1.0"), rel("0.2.0")];
        assert_eq!(
            decide(&v("0.2.0"), &rs, None).unwrap(),
            Decision::UpToDate {
                latest: Some(v("0.2.0"))
            }
        );
        // A newer local build is never downgraded implicitly.
        assert_eq!(
            decide(&v("0.3.0"), &rs, None).unwrap(),
            Decision::UpToDate {
                latest: Some(v("0.2.0"))
            }
        );
        assert_eq!(
            decide(&v("0.3.0"), &[], None).unwrap(),
            Decision::UpToDate { latest: None }
        );
    }

    #[test]
    fn prereleases_only_when_named() {
        let rs = [rel("0.2.0"), rel("0.3.0-rc.1")];
        assert_eq!(
            decide(&v("0.2.0"), &rs, None).unwrap(),
            Decision::UpToDate {
                latest: Some(v("0.2.0"))
            }
        );
        assert!(matches!(
            decide(&v("0.2.0"), &rs, Some(&v("0.3.0-rc.1"))).unwrap(),
            Decision::Upgrade(_)
        ));
        // 0.3.0-rc.1 < 0.3.0
        assert!(matches!(
            decide(&v("0.3.0"), &rs, Some(&v("0.3.0-rc.1"))).unwrap(),
            Decision::Downgrade(_)
        ));
    }

    #[test]
    fn downgrades_only_with_to() {
        let rs = [rel("0.1.0")];
        assert!(matches!(
            decide(&v("0.2.0"), &rs, None).unwrap(),
            Decision::UpToDate { .. }
        ));
        match decide(&v("0.2.0"), &rs, Some(&v("0.1.0"))).unwrap() {
            Decision::Downgrade(r) => assert_eq!(r.version, v("0.1.0")),
            d => panic!("{d:?}"),
        }
        assert_eq!(
            decide(&v("0.1.0"), &rs, Some(&v("0.1.0"))).unwrap(),
            Decision::AlreadyInstalled
        );
        let e = decide(&v("0.1.0"), &rs, Some(&v("9.9.9"))).unwrap_err();
        assert!(e.to_string().contains("v0.1.0"), "{e}");
    }
}
