//! Identifiers: [`JobId`], [`TriggerId`] (time-based UUIDs, as ha-jobs) and [`NodeId`].

use std::fmt;
use std::sync::OnceLock;

use uuid::Uuid;

use crate::error::InvalidInput;

/// The 6-byte node part of the time-based UUIDs this process makes: random
/// per process, so two processes on one host never collide.
fn uuid_node() -> &'static [u8; 6] {
    static NODE: OnceLock<[u8; 6]> = OnceLock::new();
    NODE.get_or_init(|| {
        let random = Uuid::new_v4();
        let b = random.as_bytes();
        // Multicast bit set, as RFC 9562 asks of a random node id.
        [b[0] | 0x01, b[1], b[2], b[3], b[4], b[5]]
    })
}

macro_rules! time_uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-based (version 1) UUID, as Cassandra's `timeuuid` wants.
            pub fn new() -> Self {
                Self(Uuid::now_v1(uuid_node()))
            }

            /// Wraps an existing UUID (read from Cassandra, given by a user).
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub fn uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.0.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

time_uuid_id!(
    /// One attempt to run a job: each start, and each retry, gets a new one.
    JobId
);
time_uuid_id!(
    /// One request to run a job (a cron firing or a manual trigger); the
    /// retries of a dead attempt keep it.
    TriggerId
);

impl TriggerId {
    /// The trigger id of the cron firing of `job_type` scheduled at
    /// `instant`: the same on every replica, so that all of them name one
    /// firing alike. A version-1 UUID whose time is the instant and whose
    /// clock sequence and node come from a stable hash of the job type.
    pub fn for_firing(job_type: &str, instant: std::time::SystemTime) -> Self {
        // 100 ns ticks between 1582-10-15 (the Gregorian epoch) and 1970-01-01.
        const GREGORIAN_OFFSET: u64 = 0x01B2_1DD2_1381_4000;
        let since_unix = instant
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ticks = GREGORIAN_OFFSET + (since_unix.as_nanos() / 100) as u64;
        let h = fnv1a(job_type.as_bytes()).to_be_bytes();
        let node = [h[0] | 0x01, h[1], h[2], h[3], h[4], h[5]];
        let counter = u16::from_be_bytes([h[6], h[7]]);
        Self(Uuid::new_v1(
            uuid::Timestamp::from_gregorian_time(ticks, counter),
            &node,
        ))
    }

    /// Whether this is the id of a cron firing of `job_type` (see
    /// [`TriggerId::for_firing`]) rather than of a trigger by hand.
    pub fn is_firing_of(&self, job_type: &str) -> bool {
        let Some((secs, nanos)) = self.0.get_timestamp().map(|t| t.to_unix()) else {
            return false;
        };
        let instant = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        *self == Self::for_firing(job_type, instant)
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Defines a validated name type: 1 to `MAX_LEN` bytes of UTF-8 without
/// control characters, bound as a CQL value (never spliced into CQL).
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest name accepted, in bytes.
            pub const MAX_LEN: usize = 256;

            #[doc = concat!("A ", $what, ": 1 to 256 bytes of UTF-8 without control characters. Any other character (spaces, quotes, non-ASCII) is fine.")]
            pub fn new(name: impl Into<String>) -> Result<Self, $crate::error::InvalidInput> {
                let name = name.into();
                $crate::ids::validate_name($what, &name, Self::MAX_LEN)?;
                Ok(Self(name))
            }

            #[doc = concat!("A ", $what, " from raw bytes (a file, a request body), rejecting invalid UTF-8 by name.")]
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, $crate::error::InvalidInput> {
                Self::new($crate::ids::name_from_bytes($what, bytes)?)
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::error::InvalidInput;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> Self {
                n.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}
pub(crate) use name_type;

/// Checks a name used as a Cassandra key: non-empty, at most `max` bytes, no
/// control characters.
pub(crate) fn validate_name(
    what: &'static str,
    name: &str,
    max: usize,
) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::EmptyName { what });
    }
    if name.len() > max {
        return Err(InvalidInput::NameTooLong {
            what,
            name: name.chars().take(32).collect(),
            len: name.len(),
            max,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidInput::ControlCharacter {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Decodes bytes as a name, naming the problem when they are not UTF-8.
pub(crate) fn name_from_bytes(what: &'static str, bytes: &[u8]) -> Result<String, InvalidInput> {
    String::from_utf8(bytes.to_vec()).map_err(|_| InvalidInput::NotUtf8 {
        what,
        bytes: bytes.iter().take(16).copied().collect(),
    })
}

/// The replica (process) that holds a lease or runs a job: its owner.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The longest node id accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// A node id; names such as `host-1` or `pod/abc` (1 to 256 bytes,
    /// no control characters).
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        let name = name.into();
        validate_name("node id", &name, Self::MAX_LEN)?;
        Ok(Self(name))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_id_is_told_from_a_trigger_by_hand() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_250);
        let firing = TriggerId::for_firing("report", at);
        assert!(firing.is_firing_of("report"));
        assert!(!firing.is_firing_of("import"));
        assert!(!TriggerId::new().is_firing_of("report"));
    }

    #[test]
    fn ids_are_time_based_and_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert_eq!(a.uuid().get_version_num(), 1);
        assert_ne!(a, b);
        let (ta, tb) = (
            a.uuid().get_timestamp().unwrap(),
            b.uuid().get_timestamp().unwrap(),
        );
        assert!(ta.to_gregorian() <= tb.to_gregorian());
    }

    #[test]
    fn firing_trigger_ids_are_deterministic_per_job_type_and_instant() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let a = TriggerId::for_firing("import", t);
        assert_eq!(a, TriggerId::for_firing("import", t));
        assert_ne!(a, TriggerId::for_firing("report", t));
        assert_ne!(
            a,
            TriggerId::for_firing("import", t + std::time::Duration::from_secs(1))
        );
        assert_eq!(a.uuid().get_version_num(), 1);
        let (secs, _) = a.uuid().get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_800_000_000);
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("host-1").is_ok());
        assert_eq!(
            NodeId::new(""),
            Err(InvalidInput::EmptyName { what: "node id" })
        );
        assert!(matches!(
            NodeId::new("a\nb"),
            Err(InvalidInput::ControlCharacter { .. })
        ));
        assert!(matches!(
            NodeId::new("x".repeat(257)),
            Err(InvalidInput::NameTooLong { len: 257, .. })
        ));
    }
}
