//! The steps of a firing and of an attempt's start, as tracing spans, so
//! that a slower path names the step that slowed (`cargo bench -p
//! hajobs-tests --bench scale`, `fire_steps`).
//!
//! Every span has the target [`TARGET`] and level DEBUG, so that a
//! subscriber at the default INFO level never builds one. A `firing` span
//! (field `instant_ms`: the scheduled instant, ms since the epoch) covers a
//! cron firing; a `step` span (field `step`: one of [`STEPS`]) each step
//! inside it — or inside any other trigger's start.

use std::future::Future;

use tracing::Instrument;
use tracing::instrument::Instrumented;

/// The target of the firing path's spans.
pub const TARGET: &str = "hajobs::steps";

/// The steps, in the order a cron firing takes them: the firing's claim
/// (one LWT, or a read and an LWT on a replica that is not preferred), the
/// lease (one LWT; a slot and a gate with limits), the lock keeper's start,
/// the watch list entry, the RUNNING status, and — after the job started —
/// the firing's outcome.
pub const STEPS: [&str; 6] = ["claim", "lease", "keeper", "watch", "running", "outcome"];

/// Runs `fut` as step `name` (one of [`STEPS`]).
pub(crate) fn step<F: Future>(name: &'static str, fut: F) -> Instrumented<F> {
    fut.instrument(tracing::debug_span!(target: TARGET, "step", step = name))
}

/// The span of a cron firing scheduled at `instant_ms`.
pub(crate) fn firing(instant_ms: i64) -> tracing::Span {
    tracing::debug_span!(target: TARGET, "firing", instant_ms)
}
