//! Lazy inactivity deadlines over activity counters.
//!
//! The I/O path only bumps a counter. The supervisor looks at the counter now and then:
//! unchanged since the look that last saw it move means idle since that look; changed
//! means there was activity at some point since the previous look, so the connection
//! counts as quiet only from now. A counter cannot say *when* between two looks the
//! activity happened, so the looks must never be more than `timeout / STEPS` apart
//! while the clock runs (busy or quiet): with a look only at the deadline, a single byte
//! just after a look would be noticed a whole timeout later, and the close would come
//! up to twice the timeout after that byte. With looks `timeout / STEPS` apart, a
//! connection is closed between `timeout` and `timeout × (1 + 1/STEPS)` after its last
//! byte (plus the scheduler's delay), never before. The cost is `STEPS` cheap looks per
//! timeout per connection, from one timer for all of them.

use std::time::{Duration, Instant};

/// Looks per timeout; bounds lateness to `timeout / STEPS`.
const STEPS: u32 = 8;

/// Further than any deadline needs to be: about 30 years.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + d`, saturating: a duration too large for an `Instant` (say `Duration::MAX` for
/// "practically never") becomes a deadline 30 years away instead of a panic.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}

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
    /// When the clock needs its next look.
    next_look: Instant,
}

impl IdleClock {
    pub(crate) fn new(timeout: Duration, count: u64, since: Instant) -> Self {
        let mut clock = Self {
            timeout,
            count,
            quiet_since: since,
            next_look: since,
        };
        clock.next_look = clock.next_after(since);
        clock
    }

    /// When the clock next needs a look: at most `timeout / STEPS` after the last one,
    /// and never later than the instant it would expire.
    pub(crate) fn deadline(&self) -> Instant {
        self.next_look
    }

    fn step(&self) -> Duration {
        (self.timeout / STEPS)
            .max(Duration::from_millis(1))
            .min(self.timeout)
    }

    fn next_after(&self, now: Instant) -> Instant {
        later(now, self.step()).min(self.expires_at())
    }

    fn expires_at(&self) -> Instant {
        later(self.quiet_since, self.timeout)
    }

    fn look_again(&mut self, now: Instant) -> Verdict {
        self.next_look = self.next_after(now);
        Verdict::CheckAt(self.next_look)
    }

    /// Looks at the counter like [`check`](Self::check) but cannot expire: the rule does
    /// not apply right now (e.g. nothing is waiting to be sent, so the writer cannot be
    /// stalled). A moving counter keeps the fine-grained looks going, so once the rule
    /// applies again the lateness bound still holds.
    pub(crate) fn hold(&mut self, count: u64, now: Instant) -> Verdict {
        match self.check(count, now) {
            Verdict::Expired => {
                self.quiet_since = now;
                self.look_again(now)
            }
            verdict => verdict,
        }
    }

    pub(crate) fn check(&mut self, count: u64, now: Instant) -> Verdict {
        if count != self.count {
            self.count = count;
            self.quiet_since = now;
        } else if now >= self.expires_at() {
            return Verdict::Expired;
        }
        self.look_again(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(8);
    const STEP: Duration = Duration::from_secs(1);

    #[test]
    fn quiet_counter_expires_exactly_at_deadline() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        assert_eq!(
            clock.deadline(),
            t0 + STEP,
            "first look one step after start"
        );
        assert_eq!(
            clock.check(0, t0 + T / 2),
            Verdict::CheckAt(t0 + T / 2 + STEP)
        );
        assert_eq!(
            clock.check(0, t0 + T - STEP / 2),
            Verdict::CheckAt(t0 + T),
            "never looks past the expiry"
        );
        assert_eq!(clock.check(0, t0 + T), Verdict::Expired);
    }

    #[test]
    fn activity_restarts_the_clock_from_the_look_that_saw_it() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        let seen = t0 + STEP * 3;
        assert_eq!(clock.check(5, seen), Verdict::CheckAt(seen + STEP));
        assert_eq!(clock.deadline(), seen + STEP);
        assert_eq!(clock.check(5, seen + T - STEP), Verdict::CheckAt(seen + T));
        assert_eq!(clock.check(5, seen + T), Verdict::Expired);
    }

    /// Drives the clock the way the supervisor does (a look exactly when asked, with
    /// activity at arbitrary instants in between) and returns when it expired.
    fn run(clock: &mut IdleClock, t0: Instant, activity: &[Duration]) -> Instant {
        let mut count = 0;
        let mut pending = activity.iter().map(|d| t0 + *d).peekable();
        let mut now = clock.deadline();
        loop {
            while pending.next_if(|at| *at <= now).is_some() {
                count += 1;
            }
            match clock.check(count, now) {
                Verdict::CheckAt(at) => {
                    assert!(at > now && at <= now + STEP, "looks at most a step apart");
                    now = at;
                }
                Verdict::Expired => return now,
            }
        }
    }

    #[test]
    fn sporadic_activity_expires_between_timeout_and_one_step_later() {
        // A single byte just after a look, long before the deadline: the pattern that a
        // look only at the deadline gets wrong (it expired 2 × T - STEP after the byte).
        let t0 = Instant::now();
        for byte_at in [
            Duration::from_millis(1),
            STEP + Duration::from_millis(1),
            T / 2,
        ] {
            let mut clock = IdleClock::new(T, 0, t0);
            let expired = run(&mut clock, t0, &[byte_at]);
            let last = t0 + byte_at;
            assert!(expired >= last + T, "early: byte at {byte_at:?}");
            assert!(expired <= last + T + STEP, "late: byte at {byte_at:?}");
        }
        // Pseudo-random bursts with gaps shorter and longer than a step.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200 {
            let mut at = Duration::ZERO;
            let mut activity = Vec::new();
            for _ in 0..(x % 20) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                at += Duration::from_millis(x % 7_000);
                activity.push(at);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut clock = IdleClock::new(T, 0, t0);
            let expired = run(&mut clock, t0, &activity);
            let last = t0 + activity.last().copied().unwrap_or(Duration::ZERO);
            assert!(expired >= last + T, "early: {activity:?}");
            assert!(expired <= last + T + STEP, "late: {activity:?}");
        }
    }

    #[test]
    fn busy_never_expires_and_lateness_is_bounded() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        let mut now = t0;
        let mut count = 0;
        let mut seen_at = now;
        // Busy: the counter moves before every look, for a long time.
        for _ in 0..100 {
            count += 1;
            seen_at = now;
            match clock.check(count, now) {
                Verdict::CheckAt(at) => now = at,
                Verdict::Expired => panic!("expired while busy"),
            }
        }
        // The last activity happened after the look before `seen_at`.
        let last_activity_after = seen_at - STEP;
        while let Verdict::CheckAt(at) = clock.check(count, now) {
            now = at;
        }
        assert!(now >= seen_at + T);
        assert!(now <= last_activity_after + T + STEP);
    }

    #[test]
    fn hold_restarts_the_quiet_period() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(T, 0, t0);
        let later = t0 + T * 3;
        assert_eq!(clock.hold(0, later), Verdict::CheckAt(later + STEP));
        assert_eq!(
            clock.check(0, later + T - STEP),
            Verdict::CheckAt(later + T)
        );
        assert_eq!(clock.check(0, later + T), Verdict::Expired);
    }

    #[test]
    fn huge_timeouts_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(Duration::MAX, 0, t0);
        assert!(clock.deadline() > t0 + Duration::from_secs(365 * 24 * 60 * 60));
        assert!(matches!(clock.check(0, t0 + T), Verdict::CheckAt(_)));
        assert!(matches!(clock.hold(1, t0 + T), Verdict::CheckAt(_)));
        assert_eq!(later(t0, Duration::MAX), later(t0, FAR));
    }

    #[test]
    fn tiny_timeouts_step_at_least_a_millisecond() {
        let t0 = Instant::now();
        let t = Duration::from_micros(500);
        let mut clock = IdleClock::new(t, 0, t0);
        assert_eq!(clock.deadline(), t0 + t);
        assert_eq!(clock.check(0, t0 + t), Verdict::Expired);
    }
}
