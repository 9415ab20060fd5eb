//! Lazy inactivity deadlines.
//!
//! The I/O path only bumps a counter; the supervisor looks when a deadline comes due.
//! How often it must look depends on what it can learn at a look.
//!
//! With the kernel's timestamps (Linux's `TCP_INFO` says how many milliseconds ago data
//! was last received and sent), a look knows exactly when the connection was last active,
//! so the next look goes straight to the true deadline: one look per timeout while the
//! connection is busy, and a silent one is looked at once, when it expires. Looks that
//! fall due close together are rounded up to a common grid (1/64 of the timeout, at most
//! a second), so that they share the supervisor's wake-ups. The kernel counts in jiffies,
//! so its "milliseconds ago" may be a jiffy too many: a margin of 10 ms keeps the verdict
//! from ever coming early. A connection is closed between `timeout` and
//! `timeout + 10 ms + timeout/64` after its last byte (plus the scheduler's delay).
//!
//! With only a counter, a look cannot say *when* between two looks the activity happened,
//! so the looks must never be more than `timeout / STEPS` apart while the clock runs
//! (busy or quiet): with a look only at the deadline, a single byte just after a look
//! would be noticed a whole timeout later, and the close would come up to twice the
//! timeout after that byte. With looks `timeout / STEPS` apart, a connection is closed
//! between `timeout` and `timeout × (1 + 1/STEPS)` after its last byte, never before.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Looks per timeout when only a counter is known; bounds lateness to `timeout / STEPS`.
const STEPS: u32 = 8;

/// How much a kernel timestamp may overstate the quiet time: a jiffy, at HZ ≥ 100.
pub(crate) const KERNEL_MARGIN: Duration = Duration::from_millis(10);

/// Further than any deadline needs to be: about 30 years.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `at + d`, saturating: a duration too large for an `Instant` (say `Duration::MAX` for
/// "practically never") becomes a deadline 30 years away instead of a panic.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}

/// `at - d`, saturating at `at` itself if the clock cannot go back that far.
fn earlier(at: Instant, d: Duration) -> Instant {
    at.checked_sub(d).unwrap_or(at)
}

/// `at`, rounded up to a multiple of `grain` since a process-wide epoch: deadlines that
/// fall in the same grain become one wake-up.
pub(crate) fn coarse(at: Instant, grain: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let grain_ns = grain.as_nanos().max(1);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let rounded = since.div_ceil(grain_ns) * grain_ns;
    let extra = u64::try_from(rounded - since).unwrap_or(0);
    later(at, Duration::from_nanos(extra))
}

/// What the clock says after a look.
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

    /// A clock that will be looked at with the kernel's timestamps
    /// ([`check_quiet_for`](Self::check_quiet_for)): quiet since `since`, its first look
    /// due when it would expire.
    pub(crate) fn with_timestamps(timeout: Duration, since: Instant) -> Self {
        let mut clock = Self::new(timeout, 0, since);
        clock.next_look = coarse(clock.expires_at(), clock.grain());
        clock
    }

    /// When the clock next needs a look.
    pub(crate) fn deadline(&self) -> Instant {
        self.next_look
    }

    fn step(&self) -> Duration {
        (self.timeout / STEPS)
            .max(Duration::from_millis(1))
            .min(self.timeout)
    }

    fn grain(&self) -> Duration {
        (self.timeout / 64).clamp(Duration::from_millis(1), Duration::from_secs(1))
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

    /// A look that knows only the activity counter.
    pub(crate) fn check(&mut self, count: u64, now: Instant) -> Verdict {
        if count != self.count {
            self.count = count;
            self.quiet_since = now;
        } else if now >= self.expires_at() {
            return Verdict::Expired;
        }
        self.look_again(now)
    }

    /// A look that knows how long ago the last activity was (the kernel's timestamp):
    /// the next look is the true deadline, on the grid of `grain`.
    pub(crate) fn check_quiet_for(&mut self, quiet_for: Duration, now: Instant) -> Verdict {
        let last = later(earlier(now, quiet_for), KERNEL_MARGIN);
        self.quiet_since = self.quiet_since.max(last).min(now);
        if quiet_for >= self.timeout.saturating_add(KERNEL_MARGIN) && now >= self.expires_at() {
            return Verdict::Expired;
        }
        self.next_look = coarse(self.expires_at().max(now), self.grain());
        Verdict::CheckAt(self.next_look)
    }
}

/// A minimum data rate, judged lazily over windows of its grace period: one look per
/// window while the rule applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateWindow {
    /// The byte count when the window began.
    bytes: u64,
    since: Instant,
}

impl RateWindow {
    pub(crate) fn new(bytes: u64, now: Instant) -> Self {
        Self { bytes, since: now }
    }

    /// When the window needs a look.
    pub(crate) fn deadline(&self, rate: &crate::config::MinDataRate) -> Instant {
        later(self.since, rate.grace())
    }

    /// A look with the byte count as of `now`: too slow (expired) if the window is over
    /// and fewer bytes moved in it than the rate asks; else the next window starts.
    pub(crate) fn check(
        &mut self,
        bytes: u64,
        rate: &crate::config::MinDataRate,
        now: Instant,
    ) -> Verdict {
        let due = self.deadline(rate);
        if now < due {
            return Verdict::CheckAt(due);
        }
        let moved = bytes.wrapping_sub(self.bytes);
        if moved < rate.least_in(now.saturating_duration_since(self.since)) {
            return Verdict::Expired;
        }
        *self = Self::new(bytes, now);
        Verdict::CheckAt(self.deadline(rate))
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

    /// Like `run`, with the kernel's timestamp of the last activity (in whole
    /// milliseconds, possibly a jiffy too many) instead of a counter; also counts looks.
    fn run_with_timestamps(
        clock: &mut IdleClock,
        t0: Instant,
        activity: &[Duration],
        overstate: Duration,
    ) -> (Instant, usize) {
        let mut now = clock.deadline();
        let mut looks = 0;
        loop {
            looks += 1;
            let last = activity
                .iter()
                .map(|d| t0 + *d)
                .filter(|at| *at <= now)
                .max()
                .unwrap_or(t0);
            let quiet = Duration::from_millis((now - last).as_millis() as u64) + overstate;
            match clock.check_quiet_for(quiet, now) {
                Verdict::CheckAt(at) => {
                    assert!(at >= now, "never looks back");
                    now = at.max(now + Duration::from_micros(1));
                }
                Verdict::Expired => return (now, looks),
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
            // The same with the kernel's timestamps: never early (also when they
            // overstate the quiet time by a jiffy), at most 10 ms + T/64 late, and one
            // look per activity gap rather than eight per timeout.
            for overstate in [Duration::ZERO, Duration::from_millis(4)] {
                let mut clock = IdleClock::new(T, 0, t0);
                let (expired, looks) = run_with_timestamps(&mut clock, t0, &activity, overstate);
                assert!(expired >= last + T, "early: {activity:?}");
                let bound = T + KERNEL_MARGIN + T / 64 + Duration::from_millis(1);
                assert!(
                    expired <= last + bound,
                    "late: {:?} {activity:?}",
                    expired - last
                );
                assert!(
                    looks <= activity.len() + 3,
                    "{looks} looks for {activity:?}"
                );
            }
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
        assert!(matches!(
            clock.check_quiet_for(Duration::MAX, t0 + T),
            Verdict::CheckAt(_)
        ));
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

    #[test]
    fn a_rate_window_expires_only_when_too_little_moved_in_a_whole_window() {
        let rate = crate::MinDataRate::new(100, Duration::from_secs(2));
        let t0 = Instant::now();
        let mut window = RateWindow::new(0, t0);
        // Not judged before the window is over.
        assert_eq!(
            window.check(0, &rate, t0 + STEP),
            Verdict::CheckAt(t0 + 2 * STEP)
        );
        // 200 bytes in 2 s: fast enough; a new window starts.
        let t1 = t0 + 2 * STEP;
        assert_eq!(
            window.check(200, &rate, t1),
            Verdict::CheckAt(t1 + 2 * STEP)
        );
        // 199 bytes in the next 2 s: too slow.
        assert_eq!(window.check(399, &rate, t1 + 2 * STEP), Verdict::Expired);
    }

    #[test]
    fn coarse_rounds_up_to_a_shared_grid() {
        let t0 = Instant::now();
        let grain = Duration::from_millis(100);
        let a = coarse(t0 + Duration::from_millis(1), grain);
        let b = coarse(t0 + Duration::from_millis(99), grain);
        assert!(a >= t0 + Duration::from_millis(1));
        assert!(a - t0 <= Duration::from_millis(101));
        assert!(
            b == a || b - a == grain,
            "{:?}",
            b.saturating_duration_since(a)
        );
        assert_eq!(coarse(a, grain), a, "on the grid already");
    }
}
