//! [`KeeperConfig`]: how often a lease is renewed and how early its job is cancelled.

use std::time::Duration;

use hajobs_core::lease::TTL_GRANULARITY;
use hajobs_core::{InvalidInput, LeaseTtl};

/// The shortest retry interval after a failed renewal.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// The smallest safety margin.
const MIN_SAFETY_MARGIN: Duration = Duration::from_millis(250);

/// Timing of a lock keeper, validated against its lease's TTL.
///
/// Defaults, for a TTL `T`: renew every `T/3`; after a failed renewal retry
/// every `T/10` (at least 100 ms); a safety margin of `T/10` (at least
/// 250 ms). The job is cancelled at the *deadline*
/// `sent + T − 1 s − margin`, where `sent` is when the last confirmed renewal
/// was sent and 1 s is Cassandra's TTL granularity. The margin absorbs clock
/// rate differences and skew between Cassandra nodes and the time the job
/// needs to notice its cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperConfig {
    ttl: LeaseTtl,
    renew_interval: Duration,
    retry_interval: Duration,
    safety_margin: Duration,
}

impl KeeperConfig {
    /// The defaults for `ttl` (always valid).
    pub fn for_ttl(ttl: LeaseTtl) -> Self {
        let t = ttl.duration();
        Self {
            ttl,
            renew_interval: t / 3,
            retry_interval: (t / 10).max(MIN_RETRY_INTERVAL),
            safety_margin: (t / 10).max(MIN_SAFETY_MARGIN),
        }
    }

    /// Sets the renewal interval; it must be below the usable lease time.
    pub fn with_renew_interval(mut self, interval: Duration) -> Result<Self, InvalidInput> {
        self.renew_interval = interval;
        self.validate()
    }

    /// Sets the retry interval after a failed renewal (at least 100 ms).
    pub fn with_retry_interval(mut self, interval: Duration) -> Result<Self, InvalidInput> {
        self.retry_interval = interval;
        self.validate()
    }

    /// Sets the safety margin (at least 250 ms).
    pub fn with_safety_margin(mut self, margin: Duration) -> Result<Self, InvalidInput> {
        self.safety_margin = margin;
        self.validate()
    }

    fn validate(self) -> Result<Self, InvalidInput> {
        if self.safety_margin < MIN_SAFETY_MARGIN {
            return Err(InvalidInput::Duration {
                what: "safety margin",
                value: self.safety_margin,
                rule: "it must be at least 250 ms",
            });
        }
        if self.retry_interval < MIN_RETRY_INTERVAL {
            return Err(InvalidInput::Duration {
                what: "retry interval",
                value: self.retry_interval,
                rule: "it must be at least 100 ms",
            });
        }
        let usable = self.usable();
        if self.renew_interval.is_zero() || self.renew_interval >= usable {
            return Err(InvalidInput::RenewInterval {
                interval: self.renew_interval,
                ttl: self.ttl.duration(),
                usable,
            });
        }
        Ok(self)
    }

    /// The lease TTL.
    pub fn ttl(&self) -> LeaseTtl {
        self.ttl
    }

    /// Time between a confirmed renewal's sending and the next one.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// Time between attempts after a failed renewal.
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    /// Subtracted from the guaranteed lease time to get the deadline.
    pub fn safety_margin(&self) -> Duration {
        self.safety_margin
    }

    /// How long after sending a confirmed renewal the job may keep running:
    /// TTL − 1 s − margin (zero when that is negative).
    pub fn usable(&self) -> Duration {
        self.ttl
            .duration()
            .saturating_sub(TTL_GRANULARITY)
            .saturating_sub(self.safety_margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_every_ttl() {
        for secs in [2, 3, 5, 10, 30, 60, 3600, 86_400] {
            let c = KeeperConfig::for_ttl(LeaseTtl::from_secs(secs).unwrap());
            assert!(c.validate().is_ok(), "TTL {secs}: {c:?}");
        }
    }

    #[test]
    fn a_renewal_interval_not_below_the_usable_time_is_rejected_naming_it() {
        let c = KeeperConfig::for_ttl(LeaseTtl::from_secs(10).unwrap());
        // usable = 10 − 1 − 1 = 8 s
        let err = c.with_renew_interval(Duration::from_secs(8)).unwrap_err();
        assert!(err.to_string().contains("renewal interval 8s"), "{err}");
        assert!(c.with_renew_interval(Duration::from_secs(7)).is_ok());
        assert!(c.with_renew_interval(Duration::ZERO).is_err());
        assert!(c.with_safety_margin(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn bad_ttls_are_rejected_at_construction() {
        for bad in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_millis(2500),
            Duration::from_secs(86_401),
        ] {
            let err = LeaseTtl::new(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
