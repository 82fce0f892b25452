//! `PUT /metrics`: where Firecracker flushes its JSON metrics.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Body of `PUT /metrics` (`Metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// File (or named pipe) the metrics are appended to; must exist before the request.
    pub metrics_path: PathBuf,
}
