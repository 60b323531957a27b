//! [`LockType`]: the name of a lock; jobs sharing one never run at the same time.

use crate::error::InvalidInput;
use crate::ids::name_type;

name_type!(
    /// The name of a lock. Every job type names one; several job types may
    /// share it so that they never run at the same time (ha-jobs' `LockType`).
    LockType,
    "lock type"
);

/// What separates a lock type's name from its row's suffix: `NAME#2`, `NAME#gate`.
const ROW_SEPARATOR: char = '#';
/// The suffix of a `min_interval` gate row.
const GATE: &str = "gate";

impl LockType {
    /// The lock row of slot `k` (1-based) of a lock type with capacity:
    /// slot 1 is the lock type itself, slot `k` is `NAME#k`. Each has its
    /// own lease and fencing token sequence.
    pub fn slot(&self, k: u32) -> Result<LockType, InvalidInput> {
        match k {
            0 | 1 => Ok(self.clone()),
            k => LockType::new(format!("{self}{ROW_SEPARATOR}{k}")),
        }
    }

    /// The gate row of a lock type with a `min_interval`: `NAME#gate`,
    /// taken by each start and never released (it expires).
    pub fn gate(&self) -> Result<LockType, InvalidInput> {
        LockType::new(format!("{self}{ROW_SEPARATOR}{GATE}"))
    }

    /// The lock type a row belongs to: `NAME` for `NAME#k` (k ≥ 2) and
    /// `NAME#gate`, the row itself for any other name (a `#` followed by
    /// anything else is part of the name).
    pub fn owner(&self) -> LockType {
        match self.0.rsplit_once(ROW_SEPARATOR) {
            Some((name, suffix))
                if !name.is_empty()
                    && (suffix == GATE
                        || (suffix.parse::<u32>().is_ok_and(|k| k >= 2)
                            && !suffix.starts_with('0')
                            && suffix.bytes().all(|b| b.is_ascii_digit()))) =>
            {
                LockType(name.to_owned())
            }
            _ => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_and_gate_rows_are_named_and_parsed_in_one_place() {
        let l = LockType::new("reports").unwrap();
        assert_eq!(l.slot(1).unwrap(), l);
        assert_eq!(l.slot(3).unwrap().as_str(), "reports#3");
        assert_eq!(l.gate().unwrap().as_str(), "reports#gate");
        for row in [
            l.slot(1).unwrap(),
            l.slot(3).unwrap(),
            l.slot(64).unwrap(),
            l.gate().unwrap(),
        ] {
            assert_eq!(row.owner(), l, "{row}");
        }
        // A `#` that is part of a name stays in it.
        for name in ["a#b", "a#1", "a#02", "a#", "#2", "a#+2", "a#gates"] {
            let n = LockType::new(name).unwrap();
            assert_eq!(n.owner(), n, "{name}");
        }
        let nested = LockType::new("a#b").unwrap().slot(2).unwrap();
        assert_eq!(nested.owner().as_str(), "a#b");
        let long = LockType::new("x".repeat(LockType::MAX_LEN)).unwrap();
        assert!(long.slot(2).is_err());
        assert!(long.gate().is_err());
    }

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
