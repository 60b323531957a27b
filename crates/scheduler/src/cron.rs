//! [`CronSchedule`]: a cron expression with seconds, in a time zone, and
//! how its firings run exactly once across replicas.
//!
//! Every replica's cron fires: one timer task per scheduled job type sleeps
//! on tokio's timer (millisecond resolution) until the next *scheduled
//! instant* on the replica's clock, then fires it; the replica claims `(job type, instant)` in the `cron_firing` table with an LWT, and
//! only the winner starts it, under `TriggerId::for_firing(job type,
//! instant)` — the same trigger id on every replica. A replica whose clock
//! is a few seconds off, or that fires after a short run already finished,
//! finds the instant claimed and does nothing: ha-jobs' double run of one
//! firing cannot happen. A claimed firing that finds the lock held (by the
//! previous firing, or another job type sharing the lock) retries for one
//! period of the schedule, then is skipped and logged.
//!
//! **Missed runs.** At start-up, for each job with [`MissedRuns::RunOnce`]
//! (the default, threshold 30 minutes): if the job has fired before, and its
//! latest scheduled instant is newer than the last claimed one, and the next
//! regular firing is more than the threshold away, that missed instant is
//! fired at once (claimed like any firing, so exactly one replica runs it).
//! A job that never fired has missed nothing. [`MissedRuns::Skip`] waits for
//! the next regular firing.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed cron schedule: six or seven fields (`sec min hour day month
/// weekday [year]`), evaluated in a time zone (default UTC).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    time_zone: Tz,
    cron: Cron,
}

impl CronSchedule {
    /// Parses `expression` for `time_zone` (an IANA name such as
    /// `Europe/Berlin`). The error names the problem.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, String> {
        let time_zone: Tz = time_zone
            .parse()
            .map_err(|_| format!("unknown time zone `{time_zone}` (use an IANA name such as `UTC` or `Europe/Berlin`)"))?;
        let fields = expression.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "invalid cron `{expression}`: {fields} fields, expected 6 (sec min hour day month weekday) or 7 (… year)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(expression)
            .map_err(|e| format!("invalid cron `{expression}`: {e}"))?;
        // A pattern that never matches (e.g. 30 February) is an error now, not a silent never.
        cron.find_next_occurrence(&Utc::now().with_timezone(&time_zone), false)
            .map_err(|e| format!("invalid cron `{expression}`: it never fires ({e})"))?;
        Ok(Self {
            expression: expression.to_owned(),
            time_zone,
            cron,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The expression in words ("At 02:00 on every day"), for people.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The time zone.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The latest scheduled instant at or before `now`: the instant a firing
    /// at `now` serves.
    pub fn latest_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Cron has whole seconds: 10:30:07.4 is served by 10:30:07.
        let now = now.with_nanosecond(0).unwrap_or(now);
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.time_zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first scheduled instant after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now = now.with_nanosecond(0).unwrap_or(now);
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.time_zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What to do, at start-up, about a firing missed while no replica ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedRuns {
    /// Nothing: wait for the next regular firing.
    Skip,
    /// ha-jobs' rule: run the missed firing once, at once, if the next
    /// regular firing is more than `threshold` away (default 30 minutes).
    RunOnce {
        /// Below this distance to the next regular firing, wait for it instead.
        threshold: Duration,
    },
    /// Every missed firing since the last one claimed, oldest first, at
    /// most the `cap` newest (older ones are skipped). Each is claimed once
    /// cluster-wide like a regular firing.
    All {
        /// The most missed firings run.
        cap: u32,
    },
}

impl Default for MissedRuns {
    fn default() -> Self {
        Self::RunOnce {
            threshold: Duration::from_secs(30 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = CronSchedule::parse("* * * *", "UTC").unwrap_err();
        assert!(e.contains("4 fields"), "{e}");
        let e = CronSchedule::parse("0 61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("invalid cron `0 61 * * * *`"), "{e}");
        let e = CronSchedule::parse("0 0 0 30 2 *", "UTC").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        let e = CronSchedule::parse("0 0 * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn instants_are_computed_in_the_time_zone() {
        let s = CronSchedule::parse("0 0 9 * * *", "Europe/Berlin").unwrap();
        let now: DateTime<Utc> = "2026-01-15T10:30:00Z".parse().unwrap();
        // 09:00 in Berlin (winter, UTC+1) is 08:00 UTC.
        assert_eq!(
            s.latest_at(now).unwrap().to_rfc3339(),
            "2026-01-15T08:00:00+00:00"
        );
        assert_eq!(
            s.next_after(now).unwrap().to_rfc3339(),
            "2026-01-16T08:00:00+00:00"
        );
        let every = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let t: DateTime<Utc> = "2026-01-15T10:30:07.400Z".parse().unwrap();
        assert_eq!(
            every.latest_at(t).unwrap().to_rfc3339(),
            "2026-01-15T10:30:07+00:00"
        );
    }
}
