//! Instants for what runs on tokio's clock rather than the rules' (a serve's timers, the
//! handle's futures): deadlines that saturate instead of overflowing.

use std::time::{Duration, Instant};

/// Stamps taken often (a connection's accept, the supervisor's batches, a serve's
/// requests) and read rarely: nanoseconds since an epoch, on `Instant`'s own clock. Where the platform allows (Linux), a stamp reads that
/// clock directly, without `Instant`'s arithmetic, which costs more than the read itself;
/// elsewhere it goes through `Instant`.
///
/// A stamp is never earlier than the instant it was taken: the epoch's raw reading is
/// taken before the `Instant`, so a deadline counted from a stamp can only come late, by
/// the nanoseconds between the two readings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamps {
    epoch: Instant,
    /// The epoch's raw reading (`sys::monotonic_ns`), if the platform has one.
    epoch_ns: Option<u64>,
}

impl Stamps {
    pub(crate) fn new() -> Self {
        let epoch_ns = crate::sys::monotonic_ns();
        Self {
            epoch: Instant::now(),
            epoch_ns,
        }
    }

    /// Now, as nanoseconds since the epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match (self.epoch_ns, crate::sys::monotonic_ns()) {
            (Some(epoch), Some(now)) => now.saturating_sub(epoch),
            _ => self.stamp(Instant::now()),
        }
    }

    /// `at` as nanoseconds since the epoch (0 before it, `u64::MAX` past 584 years).
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// The instant of a stamp.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        later(self.epoch, Duration::from_nanos(nanos))
    }
}

/// Further than any deadline needs to be: about 30 years.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + d`, saturating: a duration too large for an `Instant` (say `Duration::MAX` for
/// "practically never") becomes a deadline 30 years away instead of a panic.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_never_earlier_than_the_instant_it_was_taken() {
        let stamps = Stamps::new();
        for _ in 0..1000 {
            let before = Instant::now();
            let stamp = stamps.now();
            let after = Instant::now();
            let at = stamps.instant(stamp);
            assert!(
                at >= before,
                "stamp {stamp} ns reads {at:?}, taken after {before:?}"
            );
            // Late by the time between the epoch's two readings: microseconds, unless the
            // thread was preempted between them. A stamp on another clock (the wall clock,
            // the boot clock after a suspend) would be off by far more than a second.
            assert!(
                at <= after + Duration::from_secs(1),
                "stamp {at:?} after {after:?}"
            );
        }
    }

    #[test]
    fn stamps_of_instants_round_trip_and_saturate_before_the_epoch() {
        let stamps = Stamps::new();
        let epoch = stamps.instant(0);
        let at = epoch + Duration::from_millis(1500);
        assert_eq!(stamps.stamp(at), 1_500_000_000);
        assert_eq!(stamps.instant(stamps.stamp(at)), at);
        let before = epoch.checked_sub(Duration::from_secs(1));
        if let Some(before) = before {
            assert_eq!(stamps.stamp(before), 0);
        }
    }
}
