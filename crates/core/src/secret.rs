//! [`Secret`]: a password or token that never shows itself.

use std::fmt;

/// A password or token. Its `Debug` and `Display` print `(secret)`, never
/// the value, so a configuration can be logged or printed whole; the value
/// is read only through [`Secret::expose`], where it is used.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty secret is a configuration error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_secret_never_shows_itself(value in "[ -~]{1,40}") {
            let s = Secret::new(value.clone());
            prop_assert_eq!(format!("{s:?} {s} {s:#?}"), "(secret) (secret) (secret)");
            prop_assert_eq!(s.expose(), value.as_str());
        }
    }
}
