//! What the supervisor keeps per connection, and the connection's life around the rules:
//! who closed it, whether its task must end, its part in a drain, its lingering close.
//!
//! Every method is a decision the supervisor then carries out; none does I/O.

use super::table::State;
use super::{evaluate, Clocks, Limits, Nanos, Outcome, Sample, MS};
use crate::state::CloseReason;

/// How long a connection's owner (a framework serve over TLS) has to close it itself,
/// once asked, before the library closes it at the TCP level: long enough for an idle
/// connection's `close_notify` and FIN, short for a stuck handler.
pub(crate) const OWNER_GRACE: Nanos = 1_000 * MS;

/// What a drain did to a connection; each connection is counted under its last fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Untouched,
    IdleClosed,
    Forced,
}

/// A connection as the rules work on it: its [`Entry`], and its clocks if it runs any.
///
/// The supervisor stores the two apart ([`store`](Self::store)) and puts them together
/// again for each change ([`load`](Self::load)).
#[derive(Debug, Default)]
#[cfg_attr(test, derive(Clone, PartialEq, Eq))]
pub(crate) struct Watch {
    /// Which heap items are current: bumped at every reschedule, and when the slot is
    /// freed, so that items of an earlier occupant never match.
    pub(crate) sched: u32,
    /// Never [`Bits::CLOCKS`]: whether there are clocks is `clocks` itself.
    bits: Bits,
    clocks: Option<Box<Clocks>>,
}

/// A connection's entry, as the supervisor keeps one per slot: 8 bytes. Clocks are kept
/// only by a connection some rule is timing from an event of its own: in `CLOSE_WAIT` or
/// `FIN_WAIT` (the library's close, a lingering close, a drain's), waiting on queued data
/// (`write_idle_timeout`, the rates), asked to close by the library, or, without
/// `TCP_INFO`, under the idle timeouts. An idle or busy connection on Linux keeps none, so
/// the entry holds no pointer to them, only a flag saying whether they exist; a
/// connection without them costs no lookup elsewhere.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// As [`Watch::sched`]: bumping it here, without the clocks, is a reschedule too.
    pub(crate) sched: u32,
    bits: Bits,
}

/// What to do with the stream's write watch after a look (see [`Watch::write_watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteWatch {
    /// Nothing: no rule waits for queued data, or the watch set before still stands.
    Leave,
    /// Ask the stream to say when it next writes (then look once more, in case it wrote
    /// in between).
    Ask,
    /// The stream just wrote: look again after the pause instead of asking at once.
    Pause,
}

/// What a look found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// A rule expired: close the connection, gracefully or with a reset.
    Close { reason: CloseReason, abortive: bool },
    /// A rule expired on a connection whose owner closes it itself (a framework serve
    /// over TLS, so that `close_notify` goes before our FIN): claim the reason and tell
    /// the owner. If our FIN is not out [`OWNER_GRACE`] later, [`Look::ForceClose`].
    AskOwner { reason: CloseReason },
    /// The owner did not close it in time: close it at the TCP level (gracefully, and
    /// end its task), under the reason already claimed.
    ForceClose,
    /// The kernel says the connection is over, and no event said so yet: find out why
    /// (the socket's error) and end it as the kernel did.
    KernelEnded,
    /// A lingering close is done: everything queued was delivered (or the connection is
    /// over). Close the socket.
    LingerDone,
    /// Nothing to do now.
    Wait {
        /// When to look again (`None`: only when an event says so).
        next: Option<Nanos>,
        /// Ask the stream to say when it writes (a rule waits for queued data).
        watch_writes: bool,
        /// Ask the stream to say when the peer owes data.
        watch_reads: bool,
    },
}

impl Entry {
    pub(crate) fn is_live(self) -> bool {
        self.bits.has(Bits::LIVE)
    }

    pub(crate) fn is_lingering(self) -> bool {
        self.bits.has(Bits::LINGERING)
    }

    /// Over: reset, timed out, both FINs done and gone.
    pub(crate) fn is_ended(self) -> bool {
        self.bits.has(Bits::ENDED)
    }

    pub(crate) fn is_closed_by_us(self) -> bool {
        self.bits.has(Bits::CLOSED_BY_US)
    }

    /// Live, held by the application, and not over: rules and events still matter.
    pub(crate) fn is_supervised(self) -> bool {
        self.is_live() && !self.is_ended() && !self.is_lingering()
    }

    pub(crate) fn in_drain(self) -> bool {
        self.bits.has(Bits::IN_DRAIN)
    }

    pub(crate) fn fate(self) -> Fate {
        self.bits.fate()
    }

    pub(crate) fn is_unwatched(self) -> bool {
        self.bits.has(Bits::UNWATCHED)
    }

    /// Whether the connection runs clocks, kept apart from the entry: what to hand
    /// [`Watch::load`].
    pub(crate) fn has_clocks(self) -> bool {
        self.bits.has(Bits::CLOCKS)
    }
}

impl Watch {
    /// The connection whose entry is `entry` and whose clocks are `clocks`, which must be
    /// there exactly when the entry [has some](Entry::has_clocks).
    pub(crate) fn load(entry: Entry, clocks: Option<Box<Clocks>>) -> Self {
        debug_assert_eq!(entry.has_clocks(), clocks.is_some(), "clocks lost or stray");
        let mut bits = entry.bits;
        bits.clear(Bits::CLOCKS);
        Self {
            sched: entry.sched,
            bits,
            clocks,
        }
    }

    /// The connection's entry, and its clocks to keep apart (`None`: it runs none, and
    /// any kept before are to go).
    pub(crate) fn store(self) -> (Entry, Option<Box<Clocks>>) {
        (self.entry(), self.clocks)
    }

    /// The entry as it would be stored: the one place each question about the
    /// connection's flags is answered.
    fn entry(&self) -> Entry {
        let mut bits = self.bits;
        if self.clocks.is_some() {
            bits.set(Bits::CLOCKS);
        }
        Entry {
            sched: self.sched,
            bits,
        }
    }

    /// A connection registered in this slot.
    pub(crate) fn open(&mut self) {
        self.sched = self.sched.wrapping_add(1);
        self.bits = Bits::LIVE;
        self.clocks = None;
    }

    /// The slot is free again: its heap items must never match a later occupant.
    pub(crate) fn free(&mut self) {
        let sched = self.sched.wrapping_add(1);
        *self = Self {
            sched,
            ..Self::default()
        };
    }

    pub(crate) fn is_live(&self) -> bool {
        self.entry().is_live()
    }

    pub(crate) fn is_lingering(&self) -> bool {
        self.entry().is_lingering()
    }

    /// Over: reset, timed out, both FINs done and gone.
    pub(crate) fn is_ended(&self) -> bool {
        self.entry().is_ended()
    }

    pub(crate) fn is_closed_by_us(&self) -> bool {
        self.entry().is_closed_by_us()
    }

    /// Its owner closes it itself when the library would (a framework serve over TLS,
    /// which sends `close_notify` first).
    #[cfg(any(test, feature = "tls"))]
    pub(crate) fn set_owner_closes(&mut self) {
        self.bits.set(Bits::OWNER_CLOSES);
    }

    /// How the library closes it for `reason` at `now`: gracefully or with a reset, or,
    /// if its owner closes it itself and the close is graceful, by asking the owner
    /// first. Asked already, a graceful close changes nothing (`Wait` with no new
    /// deadline: the grace's stands).
    pub(crate) fn closing(&mut self, reason: CloseReason, abortive: bool, now: Nanos) -> Look {
        if abortive || !self.bits.has(Bits::OWNER_CLOSES) {
            return Look::Close { reason, abortive };
        }
        if self.bits.has(Bits::ASKED) {
            // Asked already: the owner's grace runs, and the library closes when it ends.
            return Look::Wait {
                next: None,
                watch_writes: false,
                watch_reads: false,
            };
        }
        self.bits.set(Bits::ASKED);
        self.clocks.get_or_insert_with(Box::default).asked_at = Some(now);
        Look::AskOwner { reason }
    }

    /// The connection's state as the rules see it, from what the supervisor knows and
    /// what `sample` shows.
    pub(crate) fn state(&self, sample: &Sample) -> State {
        let lingering = self.is_lingering();
        let mut fins = sample.fins();
        if lingering && !fins.ours() {
            // A lingering close always sends our FIN first.
            fins = super::table::Fins::of(fins.peer(), true);
        }
        State {
            fins,
            // Asked to close, its owner does: the rules that end a connection are done.
            closed_by_us: self.is_closed_by_us() || self.bits.has(Bits::ASKED),
            lingering,
            ended: self.is_ended(),
        }
    }

    /// Looks at the connection: what the rules say at `now`.
    pub(crate) fn look(
        &mut self,
        sample: &Sample,
        limits: &Limits,
        accepted: Nanos,
        now: Nanos,
    ) -> Look {
        if !self.is_live() || self.is_ended() {
            self.clocks = None;
            return Look::Wait {
                next: None,
                watch_writes: false,
                watch_reads: false,
            };
        }
        if self.is_lingering() {
            // Without the kernel's view there is nothing to wait for.
            match sample.kernel {
                None => return Look::LingerDone,
                Some(k) if k.closed || !k.queued => return Look::LingerDone,
                Some(_) => {}
            }
        } else if sample.kernel.is_some_and(|k| k.closed) {
            return Look::KernelEnded;
        }
        let state = self.state(sample);
        // Asked to close: if our FIN is not out by the grace's end, the library closes it.
        let owner_deadline = self
            .clocks
            .as_ref()
            .and_then(|c| c.asked_at)
            .filter(|_| self.bits.has(Bits::ASKED) && !state.fins.ours() && !self.is_closed_by_us())
            .map(|at| at.saturating_add(OWNER_GRACE));
        let Outcome {
            expired,
            next,
            watch_writes,
            watch_reads,
        } = evaluate(&mut self.clocks, state, sample, limits, accepted, now);
        if let Some(rule) = expired {
            return self.closing(rule.reason, rule.abortive, now);
        }
        match (owner_deadline, self.clocks.as_deref_mut()) {
            (Some(at), _) if now >= at => return Look::ForceClose,
            // The owner answered (our FIN is out): nothing more to wait for.
            (None, Some(clocks)) => clocks.asked_at = None,
            _ => {}
        }
        if self.clocks.as_deref().is_some_and(Clocks::is_empty) {
            self.clocks = None;
        }
        let next = match owner_deadline {
            Some(at) => Some(next.map_or(at, |n| n.min(at))),
            None => next,
        };
        Look::Wait {
            next,
            watch_writes,
            watch_reads,
        }
    }

    /// The stream was asked to say when it writes before the first look (at accept).
    pub(crate) fn writes_asked(&mut self) {
        self.bits.set(Bits::WRITES_ASKED);
    }

    /// The stream said it wrote while watched ([`write_watch`](Self::write_watch)):
    /// the supervisor looks within the pause, and asks again then.
    pub(crate) fn wrote(&mut self) {
        self.bits.clear(Bits::WRITES_ASKED);
    }

    /// The write watch after a look, given whether a rule waits for queued data
    /// (`wanted`, [`Look::Wait`]'s `watch_writes`) and whether the stream still has the
    /// watch asked for earlier (`standing`; false once it wrote, or its serve queued data).
    ///
    /// A connection that writes often (a keep-alive connection answering requests, whose
    /// every response goes out at once) would otherwise cost a message and a look per
    /// write. So when a watch fires, the supervisor looks again only after the rules'
    /// pause ([`Limits::write_watch_pause`](super::Limits::write_watch_pause)), and asks
    /// for the next write then: data queued meanwhile is judged from that look, at most
    /// the pause late, and a connection writes to the supervisor at most once a pause (one
    /// that ends within the pause costs no look at all).
    pub(crate) fn write_watch(&mut self, wanted: bool, standing: bool) -> WriteWatch {
        let asked = self.bits.has(Bits::WRITES_ASKED);
        self.bits.clear(Bits::WRITES_ASKED);
        if !wanted {
            return WriteWatch::Leave;
        }
        if asked && !standing {
            // It fired, and this look came before its message: the pause starts now.
            self.wrote();
            return WriteWatch::Pause;
        }
        self.bits.set(Bits::WRITES_ASKED);
        if asked && standing {
            WriteWatch::Leave
        } else {
            WriteWatch::Ask
        }
    }

    /// The library closed the connection for one of its rules or on request: gracefully
    /// (our FIN) or with a reset. `ends_task`: the task serving it (if spawned through
    /// the library) ends too. Returns whether to abort that task now; if it is not known
    /// yet, it is aborted when it is.
    pub(crate) fn closed(&mut self, abortive: bool, ends_task: bool) -> bool {
        if abortive {
            self.bits.set(Bits::ENDED);
            self.clocks = None;
        } else {
            self.bits.set(Bits::CLOSED_BY_US);
        }
        ends_task && self.end_task()
    }

    /// The kernel ended the connection: a failure (reset, keepalive or user timeout),
    /// which ends its task too, or the normal end after both FINs, which does not (the
    /// task ends by itself). Returns whether to abort the task now.
    pub(crate) fn kernel_ended(&mut self, failure: bool) -> bool {
        self.bits.set(Bits::ENDED);
        self.clocks = None;
        failure && self.end_task()
    }

    /// The task must end: true if it is known (abort it now), else it is aborted on
    /// arrival.
    pub(crate) fn end_task(&mut self) -> bool {
        if self.bits.has(Bits::TASK) {
            self.bits.clear(Bits::TASK);
            true
        } else {
            self.bits.set(Bits::DOOMED);
            false
        }
    }

    /// The task serving the connection is known now. Returns true if it must be aborted
    /// at once (the connection was ended before the task was known); otherwise the
    /// supervisor keeps its handle.
    pub(crate) fn task_known(&mut self) -> bool {
        if self.bits.has(Bits::DOOMED) {
            self.bits.clear(Bits::DOOMED);
            return true;
        }
        self.bits.set(Bits::TASK);
        false
    }

    /// Whether the supervisor holds the task's handle.
    #[cfg(test)]
    pub(crate) fn has_task(&self) -> bool {
        self.bits.has(Bits::TASK)
    }

    /// The application let go of the stream. `lingering`: the supervisor keeps the socket
    /// to deliver what is queued. Returns the connection's fate if a drain counts it.
    pub(crate) fn released(&mut self, lingering: bool) -> Option<Fate> {
        let fate = self.leave_drain();
        self.bits.clear(Bits::TASK);
        self.bits.clear(Bits::DOOMED);
        if lingering {
            self.bits.set(Bits::LINGERING);
        }
        fate
    }

    /// Part of a drain from now on (open when it began, or accepted while it runs).
    pub(crate) fn join_drain(&mut self) {
        self.bits.set(Bits::IN_DRAIN);
        self.bits.set_fate(Fate::Untouched);
    }

    /// Part of a drain (tests; the supervisor asks the [`Entry`]).
    #[cfg(test)]
    pub(crate) fn in_drain(&self) -> bool {
        self.entry().in_drain()
    }

    /// The drain's verdict (tests; the supervisor asks the [`Entry`]).
    #[cfg(test)]
    pub(crate) fn fate(&self) -> Fate {
        self.entry().fate()
    }

    pub(crate) fn set_fate(&mut self, fate: Fate) {
        self.bits.set_fate(fate);
    }

    /// Leaves the drain, if in one: its fate, to be counted.
    pub(crate) fn leave_drain(&mut self) -> Option<Fate> {
        if !self.bits.has(Bits::IN_DRAIN) {
            return None;
        }
        self.bits.clear(Bits::IN_DRAIN);
        Some(self.bits.fate())
    }

    /// The kernel watcher could not take it: swept instead.
    pub(crate) fn set_unwatched(&mut self) {
        self.bits.set(Bits::UNWATCHED);
    }

    /// Whether it keeps clocks on the heap (tests).
    #[cfg(test)]
    pub(crate) fn has_clocks(&self) -> bool {
        self.entry().has_clocks()
    }
}

/// An entry's flags, and a drain's verdict on it in the top bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bits(u16);

impl Bits {
    /// A registered connection whose slot is not freed yet.
    const LIVE: Bits = Bits(1);
    /// Over in the kernel, or reset by us: no rule applies.
    const ENDED: Bits = Bits(1 << 1);
    /// The library has closed it gracefully.
    const CLOSED_BY_US: Bits = Bits(1 << 2);
    /// Released by the application with data still on its way: a lingering close.
    const LINGERING: Bits = Bits(1 << 3);
    /// The kernel watcher could not take it: swept instead.
    const UNWATCHED: Bits = Bits(1 << 4);
    /// The supervisor holds the abort handle of the task serving it.
    const TASK: Bits = Bits(1 << 5);
    /// Ended before its task was known: abort the task when it is.
    const DOOMED: Bits = Bits(1 << 6);
    /// Counted by the running drain.
    const IN_DRAIN: Bits = Bits(1 << 7);
    /// Its owner closes it itself (see [`Look::AskOwner`]).
    const OWNER_CLOSES: Bits = Bits(1 << 10);
    /// Its owner was asked to close it.
    const ASKED: Bits = Bits(1 << 11);
    /// The stream was asked to say when it writes, and has not said it did (see
    /// [`Watch::write_watch`]).
    const WRITES_ASKED: Bits = Bits(1 << 12);
    /// It runs clocks, kept apart from the entry (only ever set in an [`Entry`]).
    const CLOCKS: Bits = Bits(1 << 13);
    const FATE_SHIFT: u16 = 8;

    fn has(self, bits: Bits) -> bool {
        self.0 & bits.0 != 0
    }

    fn set(&mut self, bits: Bits) {
        self.0 |= bits.0;
    }

    fn clear(&mut self, bits: Bits) {
        self.0 &= !bits.0;
    }

    fn fate(self) -> Fate {
        match (self.0 >> Self::FATE_SHIFT) & 3 {
            0 => Fate::Untouched,
            1 => Fate::IdleClosed,
            _ => Fate::Forced,
        }
    }

    fn set_fate(&mut self, fate: Fate) {
        let n = match fate {
            Fate::Untouched => 0,
            Fate::IdleClosed => 1,
            Fate::Forced => 2,
        };
        self.0 = (self.0 & !(3 << Self::FATE_SHIFT)) | (n << Self::FATE_SHIFT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_8_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 8);
    }

    /// Stored apart and loaded again, a connection is the one it was, with or without
    /// clocks, and its entry says which.
    #[test]
    fn an_entry_and_its_clocks_make_the_same_watch_again() {
        let round_trip = |watch: &Watch| {
            let (entry, clocks) = watch.clone().store();
            assert_eq!(entry.has_clocks(), watch.has_clocks());
            assert_eq!(clocks.is_some(), watch.has_clocks());
            assert_eq!(&Watch::load(entry, clocks), watch);
            entry
        };
        let mut watch = Watch::default();
        watch.open();
        watch.set_owner_closes();
        watch.join_drain();
        watch.set_fate(Fate::Forced);
        watch.sched = u32::MAX;
        let entry = round_trip(&watch);
        assert!(entry.is_supervised() && entry.in_drain() && entry.fate() == Fate::Forced);
        assert_eq!(entry.sched, u32::MAX);
        // Asking the owner starts a clock: its grace.
        let reason = CloseReason::IdleTimeout;
        assert_eq!(watch.closing(reason, false, 7), Look::AskOwner { reason });
        assert!(round_trip(&watch).has_clocks());
        // An abortive close lets the clocks go.
        watch.closed(true, false);
        let entry = round_trip(&watch);
        assert!(!entry.has_clocks() && entry.is_ended());
    }

    /// The write watch, step by step: asked once; left while it stands; once it fired,
    /// asked again at the look after its message (or, at a look before the message, a
    /// pause first); forgotten when no rule wants it.
    #[test]
    fn a_write_watch_is_asked_again_only_at_the_look_after_it_fired() {
        let mut watch = Watch::default();
        watch.open();
        assert_eq!(
            watch.write_watch(true, false),
            WriteWatch::Ask,
            "first look"
        );
        assert_eq!(
            watch.write_watch(true, true),
            WriteWatch::Leave,
            "still stands"
        );
        watch.wrote();
        assert_eq!(
            watch.write_watch(true, false),
            WriteWatch::Ask,
            "the pause's look"
        );
        assert_eq!(
            watch.write_watch(true, false),
            WriteWatch::Pause,
            "it fired, and this look came before its message"
        );
        assert_eq!(
            watch.write_watch(true, false),
            WriteWatch::Ask,
            "after the pause"
        );
        assert_eq!(
            watch.write_watch(false, false),
            WriteWatch::Leave,
            "not wanted"
        );
        assert_eq!(
            watch.write_watch(true, false),
            WriteWatch::Ask,
            "wanted again: no watch was standing, so none fired"
        );
        watch.open();
        assert_eq!(
            watch.write_watch(true, true),
            WriteWatch::Ask,
            "a new occupant"
        );
        watch.open();
        watch.writes_asked();
        assert_eq!(
            watch.write_watch(true, true),
            WriteWatch::Leave,
            "asked at accept, and standing"
        );
    }

    #[test]
    fn the_write_watch_pause_is_a_sixteenth_of_the_shortest_queued_rule() {
        use super::super::{Limits, Rate};
        let rate = |grace| {
            Some(Rate {
                bytes_per_second: 240,
                grace,
            })
        };
        let mut limits = Limits::default();
        assert_eq!(limits.write_watch_pause(), 250 * MS, "no such rule");
        limits.min_send_rate = rate(5_000 * MS);
        assert_eq!(limits.write_watch_pause(), 250 * MS, "at most 250 ms");
        limits.write_idle = Some(800 * MS);
        assert_eq!(limits.write_watch_pause(), 50 * MS);
        limits.min_send_rate = rate(0);
        assert_eq!(limits.write_watch_pause(), MS, "at least 1 ms");
        limits.idle = Some(16 * MS);
        limits.min_send_rate = None;
        assert_eq!(
            limits.write_watch_pause(),
            50 * MS,
            "the idle timeout waits for no write"
        );
    }

    #[test]
    fn fate_keeps_to_its_bits() {
        let mut watch = Watch::default();
        watch.open();
        watch.join_drain();
        for fate in [Fate::Forced, Fate::IdleClosed, Fate::Untouched] {
            watch.set_fate(fate);
            assert_eq!(watch.fate(), fate);
            assert!(watch.is_live() && watch.in_drain());
        }
    }

    #[test]
    fn a_task_known_after_its_connection_ended_is_aborted_on_arrival() {
        let mut watch = Watch::default();
        watch.open();
        assert!(!watch.kernel_ended(true), "no task known yet");
        assert!(watch.task_known(), "aborted on arrival");
        // Known first, ended after: aborted then.
        let mut watch = Watch::default();
        watch.open();
        assert!(!watch.task_known());
        assert!(watch.closed(false, true));
        // The normal end after both FINs leaves the task alone.
        let mut watch = Watch::default();
        watch.open();
        assert!(!watch.kernel_ended(false));
        assert!(!watch.task_known());
    }
}
