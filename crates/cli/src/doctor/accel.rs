//! The accelerator verdict the daemon cached (banger-hostcheck's `accel.json` format).

use super::{Check, Status};
use banger_hostcheck::accel::{self, Accel, CacheError, Verdict};
use banger_model::Layout;

const NAME: &str = "accelerator";

/// The accelerator line and the accelerator the daemon will use, if known.
///
/// `forced` is `BANGER_ACCEL`; `cached` what reading `accel.json` gave; `boot_id`
/// this boot's id. A verdict from an earlier boot is stale (the runtime directory of a
/// non-root user survives reboots) and the daemon will re-probe.
pub fn accel_check(
    forced: Option<&str>,
    cached: Result<Option<Verdict>, CacheError>,
    boot_id: &str,
) -> (Check, Option<Accel>) {
    if let Some(f) = forced.map(str::trim).filter(|s| !s.is_empty()) {
        return match f.parse::<Accel>() {
            Ok(a) => (
                Check::new(
                    NAME,
                    Status::Info,
                    format!("{}, forced by BANGER_ACCEL", a.as_str()),
                ),
                Some(a),
            ),
            Err(e) => (
                Check::new(NAME, Status::Warn, format!("BANGER_ACCEL={e}")).fix(
                    "set BANGER_ACCEL=kvm or BANGER_ACCEL=tcg, or unset it to let banger probe",
                ),
                None,
            ),
        };
    }
    let v = match cached {
        Ok(None) => {
            return (
                Check::new(NAME, Status::Info, "not probed yet (first VM start probes)"),
                None,
            )
        }
        Err(e) => {
            let path = match &e {
                CacheError::Read { path, .. } | CacheError::Invalid { path, .. } => path.clone(),
            };
            return (
                Check::new(NAME, Status::Warn, e.to_string())
                    .fix(format!("remove {path}; the next VM start probes again")),
                None,
            );
        }
        Ok(Some(v)) => v,
    };
    if v.boot_id() != boot_id.trim() {
        return (
            Check::new(
                NAME,
                Status::Info,
                "not probed since this boot (the cached verdict is from an earlier boot; the next VM start probes)",
            ),
            None,
        );
    }
    (
        Check::new(
            NAME,
            Status::Info,
            format!("{}: {}", v.choice.accel.as_str(), v.choice.reason),
        ),
        Some(v.choice.accel),
    )
}

/// [`accel_check`] for this host.
pub fn host_check(layout: &Layout) -> (Check, Option<Accel>) {
    let forced = std::env::var("BANGER_ACCEL").ok();
    accel_check(
        forced.as_deref(),
        accel::read(&layout.accel_cache()),
        &accel::boot_id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_hostcheck::accel::AccelChoice;

    #[test]
    fn verdict_reading() {
        let verdict = |accel, boot: &str| {
            Ok(Some(Verdict {
                key: format!("{boot}|/img/vmlinuz|123"),
                choice: AccelChoice {
                    accel,
                    reason: "probe said so".into(),
                },
            }))
        };
        let (c, a) = accel_check(None, verdict(Accel::Kvm, "b1"), "b1\n");
        assert_eq!((c.status, a), (Status::Info, Some(Accel::Kvm)));
        assert_eq!(c.detail, "kvm: probe said so");
        let (_, a) = accel_check(None, verdict(Accel::Tcg, "b1"), "b1");
        assert_eq!(a, Some(Accel::Tcg));
        // From an earlier boot: stale, treated as not probed.
        let (c, a) = accel_check(None, verdict(Accel::Kvm, "b0"), "b1");
        assert_eq!(a, None);
        assert!(c.detail.contains("earlier boot"), "{}", c.detail);
        let (c, a) = accel_check(None, Ok(None), "b1");
        assert_eq!(
            (c.detail.as_str(), a),
            ("not probed yet (first VM start probes)", None)
        );
        let bad = Err(CacheError::Invalid {
            path: "/run/banger/accel.json".into(),
            reason: "EOF".into(),
        });
        let (c, a) = accel_check(None, bad, "b1");
        assert_eq!((c.status, a), (Status::Warn, None));
        assert!(c.fix.is_some_and(|f| f.contains("accel.json")));
        // BANGER_ACCEL wins over the cache.
        let (_, a) = accel_check(Some("tcg"), verdict(Accel::Kvm, "b1"), "b1");
        assert_eq!(a, Some(Accel::Tcg));
        let (c, a) = accel_check(Some("fast"), Ok(None), "b1");
        assert_eq!((c.status, a), (Status::Warn, None));
    }

    #[test]
    fn reads_the_daemons_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(d.path());
        std::fs::create_dir_all(&layout.runtime).expect("mkdir");
        let v = Verdict {
            key: accel::cache_key(&accel::boot_id(), std::path::Path::new("/k")),
            choice: AccelChoice {
                accel: Accel::Tcg,
                reason: "no kvm".into(),
            },
        };
        accel::write(&layout.accel_cache(), &v).expect("write");
        let (c, a) = accel_check(None, accel::read(&layout.accel_cache()), &accel::boot_id());
        assert_eq!(a, Some(Accel::Tcg), "{}", c.detail);
    }
}
