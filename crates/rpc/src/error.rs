//! The error every RPC reply can carry.
//!
//! Codes are a closed, stable set so the CLI can branch on them (exit codes,
//! hints) without parsing messages; the message is for humans.

use serde::{Deserialize, Serialize};

/// Machine-readable class of an RPC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The named VM, image or other object does not exist.
    NotFound,
    /// Creating something whose name is already taken.
    AlreadyExists,
    /// The request or its params are malformed or invalid.
    BadRequest,
    /// The request speaks a protocol version this daemon does not.
    BadVersion,
    /// The connecting user may not use this daemon.
    Unauthorized,
    /// No handler is registered under the method name.
    UnknownMethod,
    /// The request was valid but carrying it out failed.
    OperationFailed,
}

impl ErrorCode {
    /// The wire name (`not_found`, ...), for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::OperationFailed => "operation_failed",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call as seen on the wire: code, human message and the operation id
/// under which the daemon logged the failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What failed and what to do next, for humans.
    pub message: String,
    /// The operation id tagging the daemon's log lines for this call. The
    /// server fills it in when a handler leaves it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

impl RpcError {
    /// An error with no op id yet (the server adds it).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            op_id: None,
        }
    }

    /// `not_found` with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `already_exists` with `message`.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }

    /// `bad_request` with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `operation_failed` with `message`.
    pub fn operation_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OperationFailed, message)
    }

    /// The same error tagged with `op_id`.
    pub fn with_op_id(mut self, op_id: impl Into<String>) -> Self {
        self.op_id = Some(op_id.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_on_the_wire() {
        let e = RpcError::not_found("no VM named x").with_op_id("op-00000001");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code":"not_found","message":"no VM named x","op_id":"op-00000001"})
        );
        assert_eq!(e.to_string(), "no VM named x");
        for c in [
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::BadRequest,
            ErrorCode::BadVersion,
            ErrorCode::Unauthorized,
            ErrorCode::UnknownMethod,
            ErrorCode::OperationFailed,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn op_id_is_optional_on_the_wire() {
        let e: RpcError = serde_json::from_str(r#"{"code":"bad_request","message":"m"}"#).unwrap();
        assert_eq!(e.op_id, None);
        assert!(!serde_json::to_string(&e).unwrap().contains("op_id"));
    }
}
