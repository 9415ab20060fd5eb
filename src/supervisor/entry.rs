//! What the supervisor keeps per slot: 16 bytes, the clocks boxed since most connections
//! run none (all off by default, and `close_wait` and `fin_wait` only after a FIN).

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::conn::Conn;
use crate::idle::{IdleClock, RateWindow};
use crate::sys;

/// What a drain did to a connection; each connection is counted under its last fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Untouched,
    IdleClosed,
    Forced,
}

#[derive(Default)]
pub(super) struct Entry {
    /// Which heap items are current: bumped at every reschedule, and when the slot is
    /// freed, so that items of an earlier occupant never match.
    pub(super) sched: u32,
    pub(super) bits: Bits,
    pub(super) clocks: Option<Box<Clocks>>,
}

impl Entry {
    /// A newly registered connection.
    pub(super) fn open(&mut self, first_byte_pending: bool, clocks: Option<Box<Clocks>>) {
        self.sched = self.sched.wrapping_add(1);
        self.bits = Bits::LIVE;
        if first_byte_pending {
            self.bits.set(Bits::FIRST_BYTE_PENDING);
        }
        self.clocks = clocks;
    }
}

/// An entry's flags, and a drain's verdict on it in the top two bits.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Bits(u8);

impl Bits {
    /// A registered connection whose stream is not released yet.
    pub(super) const LIVE: Bits = Bits(1);
    /// No rule applies any more (reset, or both FINs exchanged).
    pub(super) const RETIRED: Bits = Bits(2);
    /// The library has closed it gracefully: only the rules that bound our FIN's way out
    /// still apply.
    pub(super) const CLOSED_BY_US: Bits = Bits(4);
    /// The kernel watcher could not take it: swept instead.
    pub(super) const UNWATCHED: Bits = Bits(8);
    /// `first_byte_timeout` still applies.
    pub(super) const FIRST_BYTE_PENDING: Bits = Bits(16);
    /// Open when the drain began: counted in its report.
    pub(super) const IN_DRAIN: Bits = Bits(32);
    const FATE_SHIFT: u8 = 6;

    pub(super) fn has(self, bits: Bits) -> bool {
        self.0 & bits.0 != 0
    }

    pub(super) fn set(&mut self, bits: Bits) {
        self.0 |= bits.0;
    }

    pub(super) fn clear(&mut self, bits: Bits) {
        self.0 &= !bits.0;
    }

    pub(super) fn fate(self) -> Fate {
        match self.0 >> Self::FATE_SHIFT {
            0 => Fate::Untouched,
            1 => Fate::IdleClosed,
            _ => Fate::Forced,
        }
    }

    pub(super) fn set_fate(&mut self, fate: Fate) {
        let n = match fate {
            Fate::Untouched => 0,
            Fate::IdleClosed => 1,
            Fate::Forced => 2,
        };
        self.0 = (self.0 & !(3 << Self::FATE_SHIFT)) | (n << Self::FATE_SHIFT);
    }
}

/// The inactivity clocks of one connection.
#[derive(Default)]
pub(super) struct Clocks {
    pub(super) idle: Option<IdleClock>,
    pub(super) read_idle: Option<IdleClock>,
    /// Runs while data is queued. With `TCP_INFO` it stops when nothing is, and the next
    /// write starts it again (the stream reports it); without, it runs all along.
    pub(super) write_idle: Option<IdleClock>,
    pub(super) close_wait: Option<IdleClock>,
    /// After our FIN: the peer's acknowledgements are the activity.
    pub(super) fin_wait: Option<IdleClock>,
    /// `min_receive_rate`, while the peer owes data.
    pub(super) receive_rate: Option<RateWindow>,
    /// `min_send_rate`, while data is queued.
    pub(super) send_rate: Option<RateWindow>,
    /// When the supervisor learned of the peer's FIN, until our close ends `CLOSE_WAIT`
    /// (for the `close_wait_seconds` histogram).
    pub(super) peer_fin_at: Option<Instant>,
}

impl Clocks {
    /// The clocks a new connection starts with; `None` if it needs none.
    pub(super) fn at_accept(config: &Config, conn: &Conn, now: Instant) -> Option<Box<Clocks>> {
        let since = conn.accepted_at().min(now);
        let clock = |t: Option<Duration>| {
            t.map(|t| match sys::HAS_TCP_INFO {
                true => IdleClock::with_timestamps(t, since),
                false => IdleClock::new(t, 0, since),
            })
        };
        let clocks = Clocks {
            idle: clock(config.idle_timeout()),
            read_idle: clock(config.read_idle_timeout()),
            write_idle: config
                .write_idle_timeout()
                .filter(|_| !sys::HAS_TCP_INFO)
                .map(|t| IdleClock::new(t, 0, since)),
            close_wait: None,
            fin_wait: None,
            receive_rate: None,
            send_rate: None,
            peer_fin_at: None,
        };
        let any = clocks.deadlines(config).next().is_some();
        any.then(|| Box::new(clocks))
    }

    pub(super) fn deadlines<'a>(
        &'a self,
        config: &'a Config,
    ) -> impl Iterator<Item = Instant> + 'a {
        let rates = [
            self.receive_rate.zip(config.min_receive_rate()),
            self.send_rate.zip(config.min_send_rate()),
        ];
        [
            self.idle,
            self.read_idle,
            self.write_idle,
            self.close_wait,
            self.fin_wait,
        ]
        .into_iter()
        .flatten()
        .map(|c| c.deadline())
        .chain(rates.into_iter().flatten().map(|(w, r)| w.deadline(&r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn fate_keeps_to_its_bits() {
        let mut bits = Bits::LIVE;
        bits.set(Bits::IN_DRAIN);
        for fate in [Fate::Forced, Fate::IdleClosed, Fate::Untouched] {
            bits.set_fate(fate);
            assert_eq!(bits.fate(), fate);
            assert!(bits.has(Bits::LIVE) && bits.has(Bits::IN_DRAIN));
        }
    }
}
