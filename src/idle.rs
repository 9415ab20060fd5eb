//! Lazy inactivity deadlines over activity counters.
//!
//! The I/O path only bumps a counter. The supervisor looks at the counter when a deadline
//! comes due: unchanged since the counter last moved means idle since then; changed means
//! there was activity at some point before now, so it looks again a fraction of the
//! timeout later. While a connection is busy that costs one cheap check per
//! `timeout / STEPS`; once it goes quiet, it is closed between `timeout` and
//! `timeout × (1 + 1/STEPS)` after its last byte, never before.

use std::time::{Duration, Instant};

/// Checks per timeout while the counter keeps moving; bounds lateness to 1/STEPS.
const STEPS: u32 = 8;

/// What the clock says after a look at the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Idle for at least the timeout.
    Expired,
    /// Look again at this instant.
    CheckAt(Instant),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleClock {
    timeout: Duration,
    count: u64,
    /// No activity after this instant as far as we know.
    quiet_since: Instant,
}

impl IdleClock {
    pub(crate) fn new(timeout: Duration, count: u64, since: Instant) -> Self {
        Self {
            timeout,
            count,
            quiet_since: since,
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.quiet_since + self.timeout
    }

    /// Records activity now, regardless of the counter (e.g. "nothing was waiting to be
    /// sent, so the writer cannot be stalled").
    pub(crate) fn touch(&mut self, count: u64, now: Instant) -> Verdict {
        self.count = count;
        self.quiet_since = now;
        Verdict::CheckAt(self.deadline())
    }

    pub(crate) fn check(&mut self, count: u64, now: Instant) -> Verdict {
        if count != self.count {
            self.count = count;
            self.quiet_since = now;
            let step = (self.timeout / STEPS).max(Duration::from_millis(1));
            return Verdict::CheckAt(now + step.min(self.timeout));
        }
        if now >= self.deadline() {
            Verdict::Expired
        } else {
            Verdict::CheckAt(self.deadline())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(8);

    #[test]
    fn quiet_counter_expires_exactly_at_deadline() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        assert_eq!(clock.check(0, t0 + T / 2), Verdict::CheckAt(t0 + T));
        assert_eq!(clock.check(0, t0 + T), Verdict::Expired);
    }

    #[test]
    fn activity_pushes_deadline_and_lateness_is_bounded() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        // Activity happened somewhere before the first look.
        let first = t0 + T;
        assert_eq!(clock.check(5, first), Verdict::CheckAt(first + T / STEPS));
        // Quiet from then on: the deadline counts from the look that saw the change.
        assert_eq!(
            clock.check(5, first + T / STEPS),
            Verdict::CheckAt(first + T)
        );
        assert_eq!(clock.check(5, first + T), Verdict::Expired);
    }

    #[test]
    fn never_expires_early() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        let mut now = t0;
        let mut count = 0;
        // Busy: counter moves at every look, for a long time.
        for _ in 0..100 {
            count += 1;
            match clock.check(count, now) {
                Verdict::CheckAt(at) => now = at,
                Verdict::Expired => panic!("expired while busy"),
            }
        }
        let last_activity = now;
        loop {
            match clock.check(count, now) {
                Verdict::CheckAt(at) => now = at,
                Verdict::Expired => break,
            }
        }
        assert!(now >= last_activity + T);
        assert!(now <= last_activity + T + T / STEPS);
    }

    #[test]
    fn touch_restarts() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        let later = t0 + T * 3;
        assert_eq!(clock.touch(0, later), Verdict::CheckAt(later + T));
        assert_eq!(clock.check(0, later + T), Verdict::Expired);
    }
}
