//! Fault injection for the end-to-end tests, in one small mechanism.
//!
//! `BANGER_FAIL_AT=<point>[,<point>…]` arms failpoints by name. The only place that
//! consults them is the VM start machinery (`vm/stages.rs`): when a start step
//! finishes (after its work is done and its undo recorded), the step's name is
//! checked, so `BANGER_FAIL_AT=network` proves that a failure right after the network
//! step leaves nothing behind. Production code paths carry no checks of their own.
//! Unset, nothing is armed and a check is one empty-list lookup.

use crate::error::{DaemonError, Result};

/// The armed failpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    armed: Vec<String>,
}

impl Failpoints {
    /// Arm the comma-separated points in `spec` (the value of `BANGER_FAIL_AT`).
    pub fn parse(spec: Option<&str>) -> Self {
        Self {
            armed: spec
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Fail with [`DaemonError::Injected`] if `point` is armed.
    pub fn check(&self, point: &str) -> Result<()> {
        if self.armed.iter().any(|p| p == point) {
            tracing::warn!(point, "failpoint fired");
            return Err(DaemonError::Injected(point.to_string()));
        }
        Ok(())
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
}
