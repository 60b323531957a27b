//! [`LockType`]: the name of a lock; jobs sharing one never run at the same time.

use crate::ids::name_type;

name_type!(
    /// The name of a lock. Every job type names one; several job types may
    /// share it so that they never run at the same time (ha-jobs' `LockType`).
    LockType,
    "lock type"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InvalidInput;

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
