//! `PUT /actions`: starting the guest and asking it to stop.

use serde::{Deserialize, Serialize};

/// Body of `PUT /actions` (`InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// The action.
    pub action_type: ActionType,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Write the metrics now.
    FlushMetrics,
    /// Boot the configured guest (once, after all pre-boot configuration).
    InstanceStart,
    /// Press Ctrl+Alt+Del on the guest's i8042 keyboard controller: a Linux guest with
    /// `reboot=k` reboots through it, which makes Firecracker exit.
    SendCtrlAltDel,
}
