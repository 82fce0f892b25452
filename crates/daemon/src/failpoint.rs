//! Fault injection for the end-to-end tests, in one small mechanism.
//!
//! `BANGER_FAIL_AT=<point>[,<point>…]` arms failpoints by name. The only place that
//! consults them is the VM start machinery (`vm/stages.rs`): when a start step
//! finishes (after its work is done and its undo recorded), the step's name is
//! checked, so `BANGER_FAIL_AT=network` proves that a failure right after the network
//! step leaves nothing behind. Production code paths carry no checks of their own.
//! Unset, nothing is armed and a check is one empty-list lookup.
//!
//! `pause:<point>` instead makes the step wait forever at that point, logging
//! `failpoint paused at <point>` first: the fault tests kill the daemon (`kill -9`)
//! there, to prove that a daemon dying at any step leaves nothing a restart and a
//! `vm delete` do not clean up. Besides the step names there is one more point,
//! `launched`: after the VMM started and before `handles.json` records it.
//!
//! `<point>@<vm>` arms a point for one VM only (`boot@run-pa-2`), so a test can fail
//! one of several concurrent starts (one attempt of `vm run --parallel`).

use crate::error::{DaemonError, Result};

/// The armed failpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    armed: Vec<String>,
    paused: Vec<String>,
}

impl Failpoints {
    /// Arm the comma-separated points in `spec` (the value of `BANGER_FAIL_AT`).
    pub fn parse(spec: Option<&str>) -> Self {
        let mut f = Self::default();
        for p in spec
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match p.strip_prefix("pause:") {
                Some(point) => f.paused.push(point.to_string()),
                None => f.armed.push(p.to_string()),
            }
        }
        f
    }

    /// Fail with [`DaemonError::Injected`] if `point` is armed; never return if it is
    /// paused.
    pub fn check(&self, point: &str) -> Result<()> {
        self.check_vm(point, None)
    }

    /// [`Failpoints::check`] for a step of VM `vm`: also `<point>@<vm>` matches.
    pub fn check_vm(&self, point: &str, vm: Option<&str>) -> Result<()> {
        let scoped = vm.map(|v| format!("{point}@{v}"));
        let hits = |p: &String| p == point || Some(p) == scoped.as_ref();
        if self.paused.iter().any(hits) {
            pause_forever(point);
        }
        if self.armed.iter().any(hits) {
            tracing::warn!(point, "failpoint fired");
            return Err(DaemonError::Injected(point.to_string()));
        }
        Ok(())
    }
}

/// Block this step until the process is killed. On the daemon's multi-threaded
/// runtime the worker hands its other tasks over first, so the daemon keeps
/// answering (`vm list` shows the VM mid-start) while this step hangs.
fn pause_forever(point: &str) -> ! {
    tracing::warn!(point, "failpoint paused at {point}; waiting to be killed");
    let sleep = || loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(sleep),
        _ => sleep(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_points_fail_others_pass() {
        let f = Failpoints::parse(Some("network, boot"));
        assert!(f.check("disks").is_ok());
        assert!(matches!(f.check("network"), Err(DaemonError::Injected(p)) if p == "network"));
        assert!(f.check("boot").is_err());
        assert!(Failpoints::parse(None).check("boot").is_ok());
        assert!(Failpoints::parse(Some("")).check("").is_ok());
    }

    #[test]
    fn a_point_can_be_armed_for_one_vm() {
        let f = Failpoints::parse(Some("boot@run-pa-2"));
        assert!(f.check_vm("boot", Some("run-pa-1")).is_ok());
        assert!(f.check("boot").is_ok());
        assert!(matches!(
            f.check_vm("boot", Some("run-pa-2")),
            Err(DaemonError::Injected(p)) if p == "boot"
        ));
        assert!(f.check_vm("network", Some("run-pa-2")).is_ok());
    }

    #[test]
    fn pause_points_are_parsed_apart_from_failures() {
        let f = Failpoints::parse(Some("pause:boot,network"));
        assert_eq!(f.paused, ["boot"]);
        assert_eq!(f.armed, ["network"]);
        // A paused point is not a failing one (checking it would block forever).
        assert!(f.check("pause:boot").is_ok());
    }
}
