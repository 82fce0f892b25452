//! Every failure's class, exit status and rendering, in one place.
//!
//! A class is what a script branches on: the JSON error's `code` and a stable exit
//! status of its own (the table in docs/json.md, pinned by a test here). 1 stays the
//! generic failure and 2 a refused command line, as Docker's; `vm run` exits 125 for
//! any banger failure, since its own statuses belong to the guest command (the class
//! is then in the JSON error). In JSON mode an error is one object on stderr:
//! `{"error":{"code","message","op_id","hint"}}`.

use anstyle::{AnsiColor, Style};
use banger_model::Layout;
use banger_rpc::{ClientError, ErrorCode};
use serde::Serialize;
use std::process::ExitCode;

/// What kind of failure; `code` on the wire of the JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Anything else: the operation was tried and failed.
    Failed,
    /// The command line was refused (unknown flag, bad value, missing argument).
    Usage,
    /// The named VM, image, kernel or catalog entry does not exist.
    NotFound,
    /// The name to create is taken.
    AlreadyExists,
    /// The request was understood but refused as invalid (sizes, paths, names).
    Invalid,
    /// bangerd cannot be reached or started, or speaks another protocol version.
    DaemonUnavailable,
    /// This user may not use that daemon.
    Unauthorized,
    /// Interrupted (Ctrl-C).
    Interrupted,
    /// A wait (`vm wait --timeout`) ran out of time.
    Timeout,
}

impl Class {
    /// Every class, in table order (docs and tests walk it).
    #[cfg(test)]
    pub const ALL: [Class; 9] = [
        Class::Failed,
        Class::Usage,
        Class::NotFound,
        Class::AlreadyExists,
        Class::Invalid,
        Class::DaemonUnavailable,
        Class::Unauthorized,
        Class::Interrupted,
        Class::Timeout,
    ];

    /// The exit status of a command failing with this class: one per class, stable
    /// (scripts may branch on it; docs/json.md has the table). Statuses 3 to 9 are
    /// clear of the shell's (126, 127, 128 + signal) and of Docker's 125.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::Failed => 1,
            Class::Usage => 2,
            Class::NotFound => 3,
            Class::AlreadyExists => 4,
            Class::Invalid => 5,
            Class::DaemonUnavailable => 6,
            Class::Unauthorized => 7,
            Class::Timeout => 8,
            Class::Interrupted => 130,
        }
    }
}

/// A failure the CLI itself decided on, with its class (daemon errors carry theirs
/// in the RPC error code).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The class.
    pub class: Class,
    /// What failed and what to do.
    pub message: String,
}

impl CliError {
    /// A failure of `class`.
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// `Err(CliError)` as an `anyhow::Error`.
pub fn fail(class: Class, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CliError::new(class, message))
}

/// The JSON form of an error.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The class.
    pub code: Class,
    /// What failed, with its causes.
    pub message: String,
    /// The daemon operation that failed, to grep its log for.
    pub op_id: Option<String>,
    /// What to do next, when there is something beyond the message.
    pub hint: Option<String>,
}

/// The class of `e`, looking through its causes.
pub fn classify(e: &anyhow::Error) -> Class {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return c.class;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Rpc(r) => match r.code {
                    ErrorCode::NotFound => Class::NotFound,
                    ErrorCode::AlreadyExists => Class::AlreadyExists,
                    ErrorCode::BadRequest => Class::Invalid,
                    ErrorCode::Unauthorized => Class::Unauthorized,
                    ErrorCode::BadVersion | ErrorCode::UnknownMethod => Class::DaemonUnavailable,
                    ErrorCode::OperationFailed => Class::Failed,
                },
                ClientError::Connect { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    Class::Unauthorized
                }
                ClientError::Connect { .. } | ClientError::Io(_) | ClientError::Protocol(_) => {
                    Class::DaemonUnavailable
                }
                ClientError::Encode { .. } => Class::Failed,
            };
        }
        if let Some(s) = cause.downcast_ref::<banger_model::SizeError>() {
            let _ = s;
            return Class::Invalid;
        }
    }
    Class::Failed
}

/// Where the daemon's log is, as a phrase for "grep X for op-…".
pub fn daemon_log_phrase() -> String {
    if std::path::Path::new("/etc/banger/install.toml").exists()
        && Layout::for_client().socket() == std::path::Path::new("/run/banger/bangerd.sock")
    {
        return "the journal (journalctl -u bangerd)".to_string();
    }
    format!("{}", Layout::for_client().daemon_log().display())
}

/// The JSON body for `e`.
pub fn body(e: &anyhow::Error) -> ErrorBody {
    let class = classify(e);
    let mut message = format!("{e}");
    for cause in e.chain().skip(1) {
        message.push_str(&format!(": {cause}"));
    }
    let op_id = e
        .chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Rpc(r)) => r.op_id.clone(),
            _ => None,
        });
    let hint = match (class, &op_id) {
        (Class::DaemonUnavailable, _) => Some(format!(
            "check it with banger daemon status; its log is {}",
            daemon_log_phrase()
        )),
        (Class::Failed, Some(op)) => Some(format!(
            "grep {} for {op} to see everything that operation did",
            daemon_log_phrase()
        )),
        (Class::Usage, _) => Some("see banger help, or the command's --help".to_string()),
        _ => None,
    };
    ErrorBody {
        code: class,
        message: crate::ui::printable(&message),
        op_id,
        hint,
    }
}

/// Print `e` on stderr: one JSON object in JSON mode, otherwise a red `error:` line
/// and a dimmed footer naming the op id and the log it is in.
pub fn print(e: &anyhow::Error) {
    let b = body(e);
    if crate::output::json() {
        let v = serde_json::json!({ "error": b });
        eprintln!("{v}");
        return;
    }
    let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
    let dim = Style::new().dimmed();
    anstream::eprintln!("{red}error:{red:#} {}", b.message);
    if let Some(op) = &b.op_id {
        anstream::eprintln!("{dim}(op {op}: grep {} for it){dim:#}", daemon_log_phrase());
    } else if let Some(h) = &b.hint {
        anstream::eprintln!("{dim}({h}){dim:#}");
    }
}

/// Print `e` and turn it into the exit status of its class (`run_style`: 125 for
/// every class, as `vm run` does).
pub fn report(e: &anyhow::Error, run_style: bool) -> ExitCode {
    print(e);
    if run_style {
        ExitCode::from(crate::vm::EXIT_BANGER_FAILED)
    } else {
        ExitCode::from(classify(e).exit_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_rpc::RpcError;

    #[test]
    fn exit_codes_are_one_per_class_and_match_the_documented_table() {
        let codes: Vec<u8> = Class::ALL.iter().map(|c| c.exit_code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 130, 8]);
        // docs/json.md's table lists every class with its status, in this form.
        let doc = include_str!("../../../docs/json.md");
        for c in Class::ALL {
            let code = serde_json::to_value(c).unwrap();
            let row = format!("| `{}` | {} |", code.as_str().unwrap(), c.exit_code());
            assert!(doc.contains(&row), "docs/json.md lacks the row {row}");
        }
        assert_eq!(
            serde_json::to_value(Class::DaemonUnavailable).unwrap(),
            "daemon_unavailable"
        );
    }

    #[test]
    fn rpc_codes_map_to_classes() {
        let e = anyhow::Error::new(ClientError::Rpc(
            RpcError::not_found("no VM named x").with_op_id("op-1"),
        ))
        .context("showing x");
        assert_eq!(classify(&e), Class::NotFound);
        let b = body(&e);
        assert_eq!(b.op_id.as_deref(), Some("op-1"));
        assert_eq!(b.message, "showing x: no VM named x");
        assert_eq!(classify(&fail(Class::Usage, "u")), Class::Usage);
        assert_eq!(classify(&anyhow::anyhow!("plain")), Class::Failed);
    }
}
