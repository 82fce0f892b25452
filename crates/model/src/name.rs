//! VM names double as guest hostnames and as `<name>.vm` DNS labels, so they follow
//! the RFC 1123 label rules (lower-case only, to keep DNS matching trivial).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a VM name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name was empty.
    #[error("a VM name cannot be empty")]
    Empty,
    /// Longer than one DNS label allows.
    #[error("VM name {0:?} is longer than 63 characters")]
    TooLong(String),
    /// Contains something other than a-z, 0-9 and '-'.
    #[error("VM name {0:?} may only contain lower-case letters, digits and '-'")]
    BadChar(String),
    /// Starts or ends with '-'.
    #[error("VM name {0:?} must start and end with a letter or digit")]
    BadEdge(String),
}

/// A validated VM name (also its hostname).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct VmName(String);

impl VmName {
    /// Validate `s` as a VM name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s.to_string()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(NameError::BadChar(s.to_string()));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::BadEdge(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VmName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<VmName> for String {
    fn from(n: VmName) -> String {
        n.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostnames() {
        for ok in ["dev", "a", "web-1", "0abc", &"x".repeat(63)] {
            assert!(VmName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_non_hostnames() {
        assert_eq!(VmName::parse(""), Err(NameError::Empty));
        assert!(matches!(VmName::parse("Dev"), Err(NameError::BadChar(_))));
        assert!(matches!(VmName::parse("a_b"), Err(NameError::BadChar(_))));
        assert!(matches!(VmName::parse("a.b"), Err(NameError::BadChar(_))));
        assert!(matches!(VmName::parse("../x"), Err(NameError::BadChar(_))));
        assert!(matches!(VmName::parse("-a"), Err(NameError::BadEdge(_))));
        assert!(matches!(VmName::parse("a-"), Err(NameError::BadEdge(_))));
        assert!(matches!(
            VmName::parse(&"x".repeat(64)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<VmName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<VmName>("\"NOT OK\"").is_err());
    }
}
