//! [`LockType`]: the name of a lock; jobs sharing one never run at the same time.

use std::fmt;

use crate::error::InvalidInput;
use crate::ids::{name_from_bytes, validate_name};

/// The name of a lock. Every job type names one; several job types may share
/// it so that they never run at the same time (ha-jobs' `LockType`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct LockType(String);

impl LockType {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// A lock type: 1 to 256 bytes of UTF-8 without control characters. Any
    /// other character (spaces, quotes, non-ASCII) is fine: names are bound
    /// as values, never spliced into CQL.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        validate_name("lock type", &name, Self::MAX_LEN)?;
        Ok(Self(name))
    }

    /// A lock type from raw bytes (a file, a request body), rejecting
    /// invalid UTF-8 by name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidInput> {
        Self::new(name_from_bytes("lock type", bytes)?)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LockType {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<LockType> for String {
    fn from(l: LockType) -> Self {
        l.0
    }
}

impl fmt::Display for LockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lock_types_are_rejected_by_name() {
        assert_eq!(
            LockType::new(""),
            Err(InvalidInput::EmptyName { what: "lock type" })
        );
        let long = LockType::new("x".repeat(257)).unwrap_err();
        assert!(long.to_string().contains("257 bytes"), "{long}");
        assert!(LockType::new("x".repeat(256)).is_ok());
        let bad = LockType::from_bytes(&[b'a', 0xff, 0xfe]).unwrap_err();
        assert!(bad.to_string().contains("not valid UTF-8"), "{bad}");
        assert!(LockType::new("o'brien \"report\" ü 🚀").is_ok());
    }
}
