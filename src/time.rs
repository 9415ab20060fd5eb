//! Instants for what runs on tokio's clock rather than the rules' (a serve's timers, the
//! handle's futures): deadlines that saturate instead of overflowing.

use std::time::{Duration, Instant};

/// Further than any deadline needs to be: about 30 years.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + d`, saturating: a duration too large for an `Instant` (say `Duration::MAX` for
/// "practically never") becomes a deadline 30 years away instead of a panic.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}
