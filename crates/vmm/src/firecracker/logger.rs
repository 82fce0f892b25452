//! `PUT /logger`: where Firecracker writes its own log.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Body of `PUT /logger` (`Logger`).
///
/// Configured so Firecracker's messages land in their own file instead of its stdout,
/// which is the guest's serial console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// File (or named pipe) for the log; must exist before the request.
    pub log_path: PathBuf,
    /// Minimum level logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Prefix each line with its level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Prefix each line with its source file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warning,
    /// Normal operation (Firecracker's default).
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
    /// Nothing.
    Off,
}
