//! A drain's deadlines and its report: from the soft deadline on, half-close each
//! connection as soon as it is idle between requests; at the hard one, close the rest and
//! end their tasks; count how each connection of the drain ended.

use super::watch::Fate;
use super::{Nanos, MS};
use crate::stats::DrainReport;

/// Between the soft and the hard deadline, connections that were busy are looked at
/// again this often: each is half-closed as soon as it waits for its next request.
const RECHECK: Nanos = 20 * MS;

/// A drain in progress.
#[derive(Debug)]
pub(crate) struct Drain {
    soft_at: Nanos,
    hard_at: Nanos,
    soft_done: bool,
    /// When to look again at the connections that were busy, until the hard deadline.
    recheck_at: Option<Nanos>,
    /// Whether the soft step half-closes idle connections (else the HTTP layer does).
    half_close: bool,
    /// Connections of the drain not counted yet.
    remaining: usize,
    report: DrainReport,
}

/// What the drain asks of the supervisor at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainStep {
    /// Nothing yet.
    Wait,
    /// Half-close every connection of the drain that is idle between requests, then say
    /// whether some were busy ([`Drain::soft_pass_done`]).
    Soft,
    /// Close every connection of the drain not counted yet, count each, and finish.
    Hard,
}

impl Drain {
    /// A drain of `connections` connections, begun at `now`.
    pub(crate) fn new(
        now: Nanos,
        soft: Nanos,
        hard: Nanos,
        half_close: bool,
        connections: usize,
    ) -> Self {
        Self {
            soft_at: now.saturating_add(soft),
            hard_at: now.saturating_add(hard.max(soft)),
            soft_done: false,
            recheck_at: None,
            half_close,
            remaining: connections,
            report: DrainReport {
                connections,
                ..DrainReport::default()
            },
        }
    }

    /// A connection accepted while the drain runs joins it: it is counted, and closed by
    /// the deadlines like the others.
    pub(crate) fn join(&mut self) {
        self.report.connections += 1;
        self.remaining += 1;
    }

    /// When the drain needs the supervisor next.
    pub(crate) fn next_step(&self) -> Nanos {
        match (self.soft_done, self.recheck_at) {
            (false, _) => self.soft_at,
            (true, Some(at)) => at.min(self.hard_at),
            (true, None) => self.hard_at,
        }
    }

    /// What to do at `now`.
    pub(crate) fn step(&mut self, now: Nanos) -> DrainStep {
        if now >= self.hard_at {
            return DrainStep::Hard;
        }
        if now < self.soft_at {
            return DrainStep::Wait;
        }
        let first = !self.soft_done;
        self.soft_done = true;
        let due = first || self.recheck_at.is_some_and(|at| now >= at);
        if self.half_close && due {
            DrainStep::Soft
        } else {
            DrainStep::Wait
        }
    }

    /// After a soft pass: if some connections were busy, look again soon.
    pub(crate) fn soft_pass_done(&mut self, busy: bool, now: Nanos) {
        self.recheck_at = busy.then(|| now.saturating_add(RECHECK));
    }

    /// Counts a connection of the drain that ended; returns whether it was the last.
    pub(crate) fn count(&mut self, fate: Fate) -> bool {
        match fate {
            Fate::Untouched => self.report.finished += 1,
            Fate::IdleClosed => self.report.idle_closed += 1,
            Fate::Forced => self.report.forced += 1,
        }
        self.remaining = self.remaining.saturating_sub(1);
        self.is_done()
    }

    /// Every connection of the drain is counted.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining == 0
    }

    pub(crate) fn report(&self) -> DrainReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000 * MS;

    #[test]
    fn soft_then_rechecks_then_hard() {
        let mut drain = Drain::new(0, S, 3 * S, true, 2);
        assert_eq!(drain.next_step(), S);
        assert_eq!(drain.step(S / 2), DrainStep::Wait);
        assert_eq!(drain.step(S), DrainStep::Soft);
        drain.soft_pass_done(true, S);
        assert_eq!(drain.next_step(), S + RECHECK);
        assert_eq!(drain.step(S + RECHECK / 2), DrainStep::Wait);
        assert_eq!(drain.step(S + RECHECK), DrainStep::Soft);
        drain.soft_pass_done(false, S + RECHECK);
        assert_eq!(drain.next_step(), 3 * S);
        assert_eq!(drain.step(3 * S), DrainStep::Hard);
    }

    #[test]
    fn the_report_counts_every_connection_once_joiners_too() {
        let mut drain = Drain::new(0, S, S, false, 2);
        drain.join();
        assert!(!drain.count(Fate::Untouched));
        assert!(!drain.count(Fate::IdleClosed));
        assert!(drain.count(Fate::Forced));
        let r = drain.report();
        assert_eq!(r.connections, 3);
        assert_eq!(r.connections, r.finished + r.idle_closed + r.forced);
    }

    #[test]
    fn without_half_close_the_soft_deadline_asks_nothing() {
        let mut drain = Drain::new(0, S, 2 * S, false, 1);
        assert_eq!(drain.step(S), DrainStep::Wait);
        assert_eq!(drain.next_step(), 2 * S);
    }
}
