//! The line formats themselves, shared by client and server.
//!
//! Kept private: callers deal in typed params, [`Progress`] and [`RpcError`];
//! only this module knows how they are framed.

use crate::error::RpcError;
use crate::methods::Progress;
use crate::PROTOCOL_VERSION;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A request line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub v: u32,
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// A progress line (server -> client).
#[derive(Serialize)]
pub(crate) struct ProgressLine<'a> {
    pub v: u32,
    pub id: u64,
    pub progress: &'a Progress,
}

/// A successful final line (server -> client). `result` is always present,
/// `null` for methods returning nothing.
#[derive(Serialize)]
pub(crate) struct ResultLine<'a> {
    pub v: u32,
    pub id: u64,
    pub op_id: &'a str,
    pub result: &'a Value,
}

/// A failed final line (server -> client).
#[derive(Serialize)]
pub(crate) struct ErrorLine<'a> {
    pub v: u32,
    pub id: u64,
    pub error: &'a RpcError,
}

/// Any reply line, as parsed by the client.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    pub v: u32,
    pub id: u64,
    #[serde(default)]
    pub op_id: Option<String>,
    #[serde(default)]
    pub progress: Option<Progress>,
    /// `Some(Value::Null)` when the line says `"result":null`, `None` when the
    /// key is absent: the two mean different things here.
    #[serde(default, deserialize_with = "present")]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<RpcError>,
}

/// What kind of JSON value `v` is, for an error about a request that is not an object.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Serialise a reply line. Encoding our own structs cannot fail in practice
/// (no non-string map keys); if it ever does, the peer still gets a final line.
pub(crate) fn encode<T: Serialize>(id: u64, line: &T) -> String {
    serde_json::to_string(line).unwrap_or_else(|e| {
        let err = RpcError::operation_failed(format!(
            "bangerd could not encode its reply ({e}); this is a bug, please report it"
        ));
        let fallback = ErrorLine {
            v: PROTOCOL_VERSION,
            id,
            error: &err,
        };
        serde_json::to_string(&fallback).unwrap_or_else(|_| {
            format!(r#"{{"v":1,"id":{id},"error":{{"code":"operation_failed","message":"unencodable reply"}}}}"#)
        })
    })
}

/// A fresh operation id: `op-` and 8 hex digits. Short enough to type into
/// `journalctl --grep`, random enough not to collide within one log.
pub(crate) fn new_op_id() -> String {
    format!("op-{:08x}", rand::random::<u32>())
}

/// Client-chosen op ids end up in log lines; refusing anything but a short run
/// of safe characters keeps them from forging or garbling log output.
pub(crate) fn valid_op_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_op_ids_have_the_documented_shape() {
        let id = new_op_id();
        assert_eq!(id.len(), 11);
        assert!(id.starts_with("op-"));
        assert!(id[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(valid_op_id(&id));
    }

    #[test]
    fn op_id_validation_refuses_log_forgery() {
        assert!(!valid_op_id(""));
        assert!(!valid_op_id("op-1\nERROR fake"));
        assert!(!valid_op_id("op 1"));
        assert!(!valid_op_id(&"a".repeat(65)));
        assert!(valid_op_id("cli-run_1.2"));
    }

    #[test]
    fn reply_distinguishes_null_result_from_absent() {
        let r: Reply = serde_json::from_str(r#"{"v":1,"id":3,"op_id":"x","result":null}"#).unwrap();
        assert_eq!(r.result, Some(Value::Null));
        let r: Reply =
            serde_json::from_str(r#"{"v":1,"id":3,"progress":{"stage":"s","elapsed_ms":1}}"#)
                .unwrap();
        assert_eq!(r.result, None);
        assert_eq!(r.progress.unwrap().stage, "s");
    }
}
