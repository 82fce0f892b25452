//! Firecracker: the binary, its version, and which backend `auto` picks (the daemon's
//! policy, from banger-hostcheck).

use super::{Check, Status};
use banger_hostcheck::accel::Accel;
use banger_hostcheck::firecracker::{
    self, support, Probe, Support, FIRECRACKER_MIN, FIRECRACKER_TESTED,
};

const NAME: &str = "firecracker";

fn install_hint() -> String {
    let t = FIRECRACKER_TESTED;
    format!(
        "optional. Firecracker is not in Debian's archive: download firecracker-v{t}-x86_64.tgz from https://github.com/firecracker-microvm/firecracker/releases and install its release-v{t}-x86_64/firecracker-v{t}-x86_64 as /usr/local/bin/firecracker (or set BANGER_FIRECRACKER to it)"
    )
}

/// The line for a probe result.
pub fn probe_check(probe: &Probe, configured: bool) -> Check {
    let (path, v) =
        match probe {
            Probe::Missing { binary } if configured => return Check::new(
                NAME,
                Status::Warn,
                format!("BANGER_FIRECRACKER={binary} is not an executable file"),
            )
            .fix("point BANGER_FIRECRACKER at the firecracker binary, or unset it to search PATH"),
            Probe::Missing { .. } => {
                return Check::new(NAME, Status::Info, "not installed (VMs use qemu)")
                    .fix(install_hint())
            }
            Probe::Broken { reason, .. } => {
                return Check::new(NAME, Status::Warn, reason.clone()).fix(install_hint())
            }
            Probe::Found { path, version } => (path.display(), *version),
        };
    match support(v) {
        Support::Supported => Check::new(NAME, Status::Ok, format!("{path}: v{v}")),
        Support::NewerThanTested => Check::new(
            NAME,
            Status::Ok,
            format!("{path}: v{v} (newer than the tested v{FIRECRACKER_TESTED}; should work)"),
        ),
        Support::TooOld => Check::new(
            NAME,
            Status::Warn,
            format!("{path}: v{v} is older than the oldest supported v{FIRECRACKER_MIN}"),
        )
        .fix(install_hint()),
        Support::NewMajor => Check::new(
            NAME,
            Status::Warn,
            format!("{path}: v{v} is a newer major version than the tested v{FIRECRACKER_TESTED}; banger does not support it yet"),
        )
        .fix(install_hint()),
    }
}

/// Probe the binary the daemon would run (`BANGER_FIRECRACKER`, else `firecracker`).
pub fn check() -> (Check, Probe) {
    let configured = std::env::var("BANGER_FIRECRACKER")
        .ok()
        .filter(|v| !v.is_empty());
    let binary = configured.as_deref().unwrap_or("firecracker");
    let probe = firecracker::probe(binary);
    (probe_check(&probe, configured.is_some()), probe)
}

/// Which backend `auto` picks and why: the daemon's policy applied to what we found.
pub fn auto_backend(probe: &Probe, accel: Option<Accel>) -> (&'static str, String) {
    match firecracker::usable(probe, accel) {
        Ok(v) => (
            "firecracker",
            format!("firecracker {v} is installed and KVM works"),
        ),
        Err(why) => ("qemu", why.to_string()),
    }
}

/// The `backend (auto)` line.
pub fn auto_backend_check(probe: &Probe, accel: Option<Accel>) -> Check {
    let (name, why) = auto_backend(probe, accel);
    Check::new("backend (auto)", Status::Info, format!("{name}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::version::Version;

    #[test]
    fn backend_decision_table() {
        let found = |v| Probe::Found {
            path: "/usr/local/bin/firecracker".into(),
            version: v,
        };
        let ok = found(FIRECRACKER_TESTED);
        let newer = found(Version::new(1, 15, 0));
        let old = found(Version::new(1, 4, 0));
        let next = found(Version::new(2, 0, 0));
        let broken = Probe::Broken {
            path: "/x".into(),
            reason: "exit 1".into(),
        };
        let missing = Probe::Missing {
            binary: "firecracker".into(),
        };
        let cases = [
            (&ok, Some(Accel::Kvm), "firecracker", "KVM works"),
            (&newer, Some(Accel::Kvm), "firecracker", "1.15.0"),
            (&ok, Some(Accel::Tcg), "qemu", "needs KVM"),
            (&ok, None, "qemu", "not been verified"),
            (&old, Some(Accel::Kvm), "qemu", "not supported"),
            (&next, Some(Accel::Kvm), "qemu", "not supported"),
            (&broken, Some(Accel::Kvm), "qemu", "unusable"),
            (&missing, Some(Accel::Kvm), "qemu", "not installed"),
        ];
        for (fc, accel, want, why) in cases {
            let (got, reason) = auto_backend(fc, accel);
            assert_eq!(got, want, "{fc:?} {accel:?}");
            assert!(reason.contains(why), "{fc:?} {accel:?}: {reason}");
        }
    }

    #[test]
    fn version_lines() {
        let found = |v| Probe::Found {
            path: "/fc".into(),
            version: v,
        };
        assert_eq!(
            probe_check(&found(FIRECRACKER_TESTED), false).status,
            Status::Ok
        );
        assert_eq!(
            probe_check(&found(Version::new(1, 0, 0)), false).status,
            Status::Warn
        );
        let missing = Probe::Missing {
            binary: "/opt/fc".into(),
        };
        assert_eq!(probe_check(&missing, false).status, Status::Info);
        assert_eq!(probe_check(&missing, true).status, Status::Warn);
    }
}
