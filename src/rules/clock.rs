//! Lazy inactivity clocks and rate windows, on the rules' clock (nanoseconds since the
//! listener's epoch).
//!
//! The I/O path only bumps a counter; the supervisor looks when a deadline comes due.
//! How often it must look depends on what it can learn at a look.
//!
//! With the kernel's timestamps (Linux's `TCP_INFO` says how many milliseconds ago data
//! was last received and sent), a look knows exactly when the connection was last active,
//! so the next look goes straight to the true deadline ([`look_quiet`]): one look per
//! timeout while the connection is busy, and a silent one is looked at once, when it
//! expires. Such a look needs no state of its own. Looks that fall due close together are
//! rounded up to a common grid (1/64 of the timeout, at most a second), so that they share
//! the supervisor's wake-ups. The kernel counts in jiffies, so its "milliseconds ago" may be
//! a jiffy too many: a margin of 10 ms keeps the verdict from ever coming early. A
//! connection is closed between `timeout` and `timeout + 10 ms + timeout/64` after its
//! last byte (plus the scheduler's delay). The kernel's milliseconds are 32 bits wide and
//! wrap after 49.7 days, so timeouts of [`TIMESTAMP_LIMIT`] or more use a counter instead.
//!
//! With only a counter ([`CounterClock`]), a look cannot say *when* between two looks the
//! activity happened, so the looks must never be more than `timeout / STEPS` apart while
//! the clock runs: with a look only at the deadline, a single byte just after a look would
//! be noticed a whole timeout later, and the close would come up to twice the timeout
//! after that byte. With looks `timeout / STEPS` apart, a connection is closed between
//! `timeout` and `timeout × (1 + 1/STEPS)` after its last byte, never before.

use super::{Nanos, MS};

/// Looks per timeout when only a counter is known; bounds lateness to `timeout / STEPS`.
const STEPS: u64 = 8;

/// How much a kernel timestamp may overstate the quiet time: a jiffy, at HZ ≥ 100.
pub(crate) const KERNEL_MARGIN: Nanos = 10 * MS;

/// Timeouts from this one up are judged with a counter: the kernel's quiet times are
/// 32-bit milliseconds (they wrap after 49.7 days), and half of that keeps well clear.
pub(crate) const TIMESTAMP_LIMIT: Nanos = (1 << 31) * MS;

/// What a clock says after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Idle (or too slow) for the rule's timeout.
    Expired,
    /// Look again at this instant.
    CheckAt(Nanos),
}

/// `at`, rounded up to a multiple of `grain`: deadlines that fall in the same grain become
/// one wake-up.
pub(crate) fn coarse(at: Nanos, grain: Nanos) -> Nanos {
    let grain = grain.max(1);
    let rounded = at / grain + u64::from(at % grain != 0);
    rounded.saturating_mul(grain).max(at)
}

/// The grid a timestamp look rounds to: 1/64 of the timeout, between 1 ms and 1 s.
fn grain(timeout: Nanos) -> Nanos {
    (timeout / 64).clamp(MS, 1_000 * MS)
}

/// A look that knows how long ago the last activity was (the kernel's timestamp,
/// `quiet_for`): expired, or the next look at the true deadline, on the grid.
pub(crate) fn look_quiet(timeout: Nanos, quiet_for: Nanos, now: Nanos) -> Verdict {
    // The last activity, as late as the kernel's rounding allows.
    let last = now
        .saturating_sub(quiet_for)
        .saturating_add(KERNEL_MARGIN)
        .min(now);
    let expires = last.saturating_add(timeout);
    if quiet_for >= timeout.saturating_add(KERNEL_MARGIN) && now >= expires {
        return Verdict::Expired;
    }
    Verdict::CheckAt(coarse(expires.max(now), grain(timeout)))
}

/// An inactivity clock that knows only an activity counter: 24 bytes, the timeout kept
/// by the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterClock {
    count: u64,
    /// No activity after this instant as far as we know.
    quiet_since: Nanos,
    /// When the clock needs its next look.
    next_look: Nanos,
}

impl CounterClock {
    /// A clock started at `now` with the counter at `count`.
    pub(crate) fn new(timeout: Nanos, count: u64, now: Nanos) -> Self {
        let mut clock = Self {
            count,
            quiet_since: now,
            next_look: now,
        };
        clock.next_look = clock.next_after(timeout, now);
        clock
    }

    /// When the clock next needs a look.
    #[cfg(test)]
    pub(crate) fn deadline(&self) -> Nanos {
        self.next_look
    }

    fn next_after(&self, timeout: Nanos, now: Nanos) -> Nanos {
        let step = (timeout / STEPS).max(MS).min(timeout);
        now.saturating_add(step)
            .min(self.quiet_since.saturating_add(timeout))
    }

    /// A look with the counter as of `now`.
    pub(crate) fn check(&mut self, timeout: Nanos, count: u64, now: Nanos) -> Verdict {
        if count != self.count {
            self.count = count;
            self.quiet_since = now;
        } else if now >= self.quiet_since.saturating_add(timeout) {
            return Verdict::Expired;
        }
        self.next_look = self.next_after(timeout, now);
        Verdict::CheckAt(self.next_look)
    }
}

/// A read-idle clock started at some instant (not at accept): the kernel's timestamp
/// where there is one, else a counter. For
/// [`ConnectionHandle::read_idle`](crate::ConnectionHandle::read_idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadIdleClock {
    timeout: Nanos,
    started: Nanos,
    counter: CounterClock,
}

impl ReadIdleClock {
    pub(crate) fn new(timeout: Nanos, count: u64, now: Nanos) -> Self {
        Self {
            timeout,
            started: now,
            counter: CounterClock::new(timeout, count, now),
        }
    }

    /// A look with the bytes received so far and, where the kernel says, how long ago
    /// the last one came.
    pub(crate) fn check(&mut self, count: u64, quiet_for: Option<Nanos>, now: Nanos) -> Verdict {
        match quiet_for {
            Some(quiet) if self.timeout < TIMESTAMP_LIMIT => {
                // Never quiet for longer than the clock has run.
                look_quiet(
                    self.timeout,
                    quiet.min(now.saturating_sub(self.started)),
                    now,
                )
            }
            _ => self.counter.check(self.timeout, count, now),
        }
    }
}

/// A minimum data rate, judged lazily over windows of its grace period: one look per
/// window while the rule applies. 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateWindow {
    /// The byte count when the window began.
    bytes: u64,
    since: Nanos,
}

/// How a rate window treats a window in which nothing moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Silence {
    /// Too slow, like any other window below the rate: the peer certainly owes the bytes
    /// (data is queued for it to acknowledge).
    Counts,
    /// Not judged: a peer that sends nothing is idle, not slow (the idle timeouts judge
    /// it). Nor is one that stopped sending in the first half of the window and has been
    /// silent since: it finished what it had to send. Only a peer that is still sending,
    /// too slowly, is too slow.
    Excused,
}

impl RateWindow {
    pub(crate) fn new(bytes: u64, now: Nanos) -> Self {
        Self { bytes, since: now }
    }

    /// When the window needs a look.
    pub(crate) fn deadline(&self, grace: Nanos) -> Nanos {
        self.since.saturating_add(grace)
    }

    /// A look with the byte count as of `now` (and, where the kernel says, how long the
    /// peer has been silent): too slow if the window is over and fewer bytes moved in it
    /// than `least(elapsed)`; else the next window starts.
    pub(crate) fn check(
        &mut self,
        bytes: u64,
        grace: Nanos,
        least: impl Fn(Nanos) -> u64,
        silence: Silence,
        quiet_for: Option<Nanos>,
        now: Nanos,
    ) -> Verdict {
        let due = self.deadline(grace);
        if now < due {
            return Verdict::CheckAt(due);
        }
        let moved = bytes.wrapping_sub(self.bytes);
        let slow = moved < least(now.saturating_sub(self.since));
        let excused = silence == Silence::Excused
            && (moved == 0 || quiet_for.is_some_and(|q| q >= grace / 2));
        if slow && !excused {
            return Verdict::Expired;
        }
        *self = Self::new(bytes, now);
        Verdict::CheckAt(self.deadline(grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Nanos = 8_000 * MS;
    const STEP: Nanos = 1_000 * MS;

    #[test]
    fn quiet_counter_expires_exactly_at_deadline() {
        let t0 = 5 * T;
        let mut clock = CounterClock::new(T, 0, t0);
        assert_eq!(
            clock.deadline(),
            t0 + STEP,
            "first look one step after start"
        );
        assert_eq!(
            clock.check(T, 0, t0 + T / 2),
            Verdict::CheckAt(t0 + T / 2 + STEP)
        );
        assert_eq!(
            clock.check(T, 0, t0 + T - STEP / 2),
            Verdict::CheckAt(t0 + T),
            "never looks past the expiry"
        );
        assert_eq!(clock.check(T, 0, t0 + T), Verdict::Expired);
    }

    #[test]
    fn activity_restarts_the_clock_from_the_look_that_saw_it() {
        let mut clock = CounterClock::new(T, 0, 0);
        let seen = STEP * 3;
        assert_eq!(clock.check(T, 5, seen), Verdict::CheckAt(seen + STEP));
        assert_eq!(
            clock.check(T, 5, seen + T - STEP),
            Verdict::CheckAt(seen + T)
        );
        assert_eq!(clock.check(T, 5, seen + T), Verdict::Expired);
    }

    /// A xorshift generator: the same pseudo-random bursts on every run.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Drives a counter clock the way the supervisor does (a look exactly when asked,
    /// with activity at arbitrary instants in between) and returns when it expired.
    fn run(activity: &[Nanos]) -> Nanos {
        let mut clock = CounterClock::new(T, 0, 0);
        let mut count = 0;
        let mut pending = activity.iter().peekable();
        let mut now = clock.deadline();
        loop {
            while pending.next_if(|at| **at <= now).is_some() {
                count += 1;
            }
            match clock.check(T, count, now) {
                Verdict::CheckAt(at) => {
                    assert!(at > now && at <= now + STEP, "looks at most a step apart");
                    now = at;
                }
                Verdict::Expired => return now,
            }
        }
    }

    /// Like `run`, with the kernel's timestamp of the last activity (whole milliseconds,
    /// possibly a jiffy too many) instead of a counter; also counts looks.
    fn run_with_timestamps(activity: &[Nanos], overstate: Nanos) -> (Nanos, usize) {
        let mut now = look_quiet(T, 0, 0).deadline_or(0);
        let mut looks = 0;
        loop {
            looks += 1;
            let last = activity
                .iter()
                .copied()
                .filter(|at| *at <= now)
                .max()
                .unwrap_or(0);
            let quiet = (now - last) / MS * MS + overstate;
            match look_quiet(T, quiet, now) {
                Verdict::CheckAt(at) => {
                    assert!(at >= now, "never looks back");
                    now = at.max(now + 1_000);
                }
                Verdict::Expired => return (now, looks),
            }
        }
    }

    impl Verdict {
        fn deadline_or(self, or: Nanos) -> Nanos {
            match self {
                Verdict::CheckAt(at) => at,
                Verdict::Expired => or,
            }
        }
    }

    #[test]
    fn sporadic_activity_expires_between_timeout_and_one_step_later() {
        // A single byte just after a look, long before the deadline: the pattern that a
        // look only at the deadline gets wrong (it expired 2 × T - STEP after the byte).
        for byte_at in [MS, STEP + MS, T / 2] {
            let expired = run(&[byte_at]);
            assert!(expired >= byte_at + T, "early: byte at {byte_at}");
            assert!(expired <= byte_at + T + STEP, "late: byte at {byte_at}");
        }
        // Pseudo-random bursts with gaps shorter and longer than a step.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200 {
            let mut at = 0;
            let mut activity = Vec::new();
            for _ in 0..(xorshift(&mut x) % 20) {
                at += (xorshift(&mut x) % 7_000) * MS;
                activity.push(at);
            }
            let last = activity.last().copied().unwrap_or(0);
            let expired = run(&activity);
            assert!(expired >= last + T, "early: {activity:?}");
            assert!(expired <= last + T + STEP, "late: {activity:?}");
            // The same with the kernel's timestamps: never early (also when they overstate
            // the quiet time by a jiffy), at most 10 ms + T/64 late, and one look per
            // activity gap rather than eight per timeout.
            for overstate in [0, 4 * MS] {
                let (expired, looks) = run_with_timestamps(&activity, overstate);
                assert!(expired >= last + T, "early: {activity:?}");
                let bound = T + KERNEL_MARGIN + T / 64 + MS;
                assert!(
                    expired <= last + bound,
                    "late: {} {activity:?}",
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
        let mut clock = CounterClock::new(T, 0, 0);
        let mut now = 0;
        let mut count = 0;
        let mut seen_at = now;
        for _ in 0..100 {
            count += 1;
            seen_at = now;
            match clock.check(T, count, now) {
                Verdict::CheckAt(at) => now = at,
                Verdict::Expired => panic!("expired while busy"),
            }
        }
        // The last activity happened after the look before `seen_at`.
        let last_activity_after = seen_at - STEP;
        while let Verdict::CheckAt(at) = clock.check(T, count, now) {
            now = at;
        }
        assert!(now >= seen_at + T);
        assert!(now <= last_activity_after + T + STEP);
    }

    #[test]
    fn huge_timeouts_saturate_instead_of_overflowing() {
        let mut clock = CounterClock::new(Nanos::MAX, 0, T);
        assert_eq!(clock.deadline(), T + Nanos::MAX / STEPS);
        assert!(matches!(
            clock.check(Nanos::MAX, 0, 2 * T),
            Verdict::CheckAt(_)
        ));
        assert!(matches!(
            look_quiet(Nanos::MAX, Nanos::MAX, T),
            Verdict::CheckAt(_)
        ));
        assert_eq!(coarse(Nanos::MAX - 1, 1_000), Nanos::MAX);
    }

    #[test]
    fn tiny_timeouts_step_at_least_a_millisecond() {
        let t = MS / 2;
        let mut clock = CounterClock::new(t, 0, 0);
        assert_eq!(clock.deadline(), t);
        assert_eq!(clock.check(t, 0, t), Verdict::Expired);
    }

    #[test]
    fn a_rate_window_expires_only_when_too_little_moved_in_a_whole_window() {
        // 100 bytes a second over 2-second windows.
        let grace = 2 * STEP;
        let least = |elapsed: Nanos| elapsed / 10_000_000;
        let mut window = RateWindow::new(0, 0);
        let check = |w: &mut RateWindow, bytes, now| {
            w.check(bytes, grace, least, Silence::Counts, None, now)
        };
        assert_eq!(check(&mut window, 0, STEP), Verdict::CheckAt(grace));
        // 200 bytes in 2 s: fast enough; a new window starts.
        assert_eq!(check(&mut window, 200, grace), Verdict::CheckAt(2 * grace));
        // 199 bytes in the next 2 s: too slow.
        assert_eq!(check(&mut window, 399, 2 * grace), Verdict::Expired);
    }

    #[test]
    fn an_excused_silence_is_never_too_slow() {
        let grace = 2 * STEP;
        let least = |elapsed: Nanos| elapsed / 10_000_000;
        let mut window = RateWindow::new(0, 0);
        // Nothing moved at all: idle, not slow.
        let v = window.check(0, grace, least, Silence::Excused, None, grace);
        assert_eq!(v, Verdict::CheckAt(2 * grace));
        // A tail of 10 bytes early in the window, silence since: done, not slow.
        let v = window.check(
            10,
            grace,
            least,
            Silence::Excused,
            Some(STEP + MS),
            2 * grace,
        );
        assert_eq!(v, Verdict::CheckAt(3 * grace));
        // 10 bytes and the last of them recent: a trickle, too slow.
        let v = window.check(20, grace, least, Silence::Excused, Some(MS), 3 * grace);
        assert_eq!(v, Verdict::Expired);
        // Without the kernel's timestamp a trickle is judged by its bytes alone.
        let mut window = RateWindow::new(0, 0);
        let v = window.check(10, grace, least, Silence::Excused, None, grace);
        assert_eq!(v, Verdict::Expired);
    }

    #[test]
    fn coarse_rounds_up_to_a_shared_grid() {
        let grain = 100 * MS;
        let a = coarse(T + MS, grain);
        let b = coarse(T + 99 * MS, grain);
        assert_eq!(a, T + grain);
        assert_eq!(a, b);
        assert_eq!(coarse(a, grain), a, "on the grid already");
    }
}
