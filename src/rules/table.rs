//! The rules as data: one row per rule, saying why it closes, how, on which clock, and in
//! which states of a connection it applies.
//!
//! Adding a rule means a row here, its option (in `Options`, the `Builder` and
//! [`Limits`](super::Limits)) and its [`CloseReason`]; [`evaluate`](super::evaluate)
//! reads the row.

use crate::state::CloseReason;

/// Which FINs have gone through, as far as the supervisor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Fins {
    /// Neither: `ESTABLISHED`.
    None,
    /// The peer's: `CLOSE_WAIT` on our side.
    Peer,
    /// Ours (the application's shutdown, or the library's close): `FIN_WAIT_1/2`.
    Ours,
    /// Both: `LAST_ACK`, `CLOSING`, `TIME_WAIT`, or gone.
    Both,
}

impl Fins {
    #[cfg(test)]
    pub(crate) const ALL: [Fins; 4] = [Fins::None, Fins::Peer, Fins::Ours, Fins::Both];

    pub(crate) fn of(peer: bool, ours: bool) -> Self {
        match (peer, ours) {
            (false, false) => Fins::None,
            (true, false) => Fins::Peer,
            (false, true) => Fins::Ours,
            (true, true) => Fins::Both,
        }
    }

    pub(crate) fn peer(self) -> bool {
        matches!(self, Fins::Peer | Fins::Both)
    }

    pub(crate) fn ours(self) -> bool {
        matches!(self, Fins::Ours | Fins::Both)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Fins`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FinSet(u8);

impl FinSet {
    const fn of(fins: &[Fins]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < fins.len() {
            bits |= fins[i].bit();
            i += 1;
        }
        FinSet(bits)
    }

    pub(crate) const fn contains(self, fins: Fins) -> bool {
        self.0 & fins.bit() != 0
    }
}

/// Where a connection is, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub(crate) fins: Fins,
    /// The library has closed it gracefully (our FIN is out, the application's reads end
    /// at EOF): the rules that end a connection are done with it; those that bound our
    /// FIN's way out still apply.
    pub(crate) closed_by_us: bool,
    /// The application has dropped it with data still on its way; the supervisor holds
    /// the socket until that data is delivered (a lingering close).
    pub(crate) lingering: bool,
    /// Over in the kernel (reset, timed out, both FINs done and gone) or reset by us:
    /// nothing applies any more.
    pub(crate) ended: bool,
}

/// What a rule's clock measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Absolute, from accept (`max_connection_age`).
    Age,
    /// Absolute, from accept, until the peer's first byte of data.
    FirstByte,
    /// Since the last byte either way (the kernel's timestamps, or the counters).
    Idle,
    /// Since the last byte received (the kernel's timestamp, or the counters).
    ReadIdle,
    /// Since the later of the peer's FIN and our last write or the peer's last
    /// acknowledgement (counted).
    CloseWait,
    /// Since the later of our FIN and the peer's last acknowledgement or byte (counted):
    /// a half-closed peer that keeps sending is well-behaved.
    FinWait,
    /// Since the peer's last acknowledgement, while data is queued (counted).
    WriteIdle,
    /// Bytes acknowledged per window, while data is queued.
    SendRate,
    /// Bytes received per window, while the peer owes data.
    ReceiveRate,
}

/// When a rule's clock runs, within the states where the rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Always,
    /// Until the peer's first byte of data.
    NoDataYet,
    /// While data is queued for the peer (unsent or unacknowledged). Without the kernel's
    /// counters it cannot be seen, and the clock runs all along.
    Queued,
    /// While the peer owes data: the application waits for more of a message (the
    /// stream's marks), or a framework serve says a request body is awaited.
    Owed,
}

/// One rule.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) reason: CloseReason,
    /// Reset rather than FIN: only where the peer has stopped taking data, so nothing
    /// more can be delivered anyway.
    pub(crate) abortive: bool,
    pub(crate) clock: Clock,
    pub(crate) gate: Gate,
    /// The FIN states in which it applies (while the application holds the stream).
    pub(crate) fins: FinSet,
    /// Whether it still applies once the library has closed the connection gracefully.
    pub(crate) after_our_close: bool,
    /// Whether it applies to a lingering close (in the same FIN states).
    pub(crate) lingering: bool,
}

impl Rule {
    /// Whether the rule applies in `state` (its gate aside).
    pub(crate) fn applies(&self, state: State) -> bool {
        if state.ended || !self.fins.contains(state.fins) {
            return false;
        }
        if state.lingering {
            return self.lingering;
        }
        self.after_our_close || !state.closed_by_us
    }
}

use Fins::{Both, None as Neither, Ours, Peer};

const UNTIL_BOTH: FinSet = FinSet::of(&[Neither, Peer, Ours]);
const WHILE_PEER_SENDS: FinSet = FinSet::of(&[Neither, Ours]);
const ANY: FinSet = FinSet::of(&[Neither, Peer, Ours, Both]);

/// Every rule, in the order they are judged: when two expire at the same look, the first
/// gives the reason.
pub(crate) const RULES: [Rule; 9] = [
    Rule {
        reason: CloseReason::MaxConnectionAge,
        abortive: false,
        clock: Clock::Age,
        gate: Gate::Always,
        fins: UNTIL_BOTH,
        after_our_close: false,
        lingering: false,
    },
    Rule {
        reason: CloseReason::FirstByteTimeout,
        abortive: false,
        clock: Clock::FirstByte,
        gate: Gate::NoDataYet,
        fins: UNTIL_BOTH,
        after_our_close: false,
        lingering: false,
    },
    Rule {
        reason: CloseReason::CloseWaitTimeout,
        abortive: false,
        clock: Clock::CloseWait,
        gate: Gate::Always,
        fins: FinSet::of(&[Peer]),
        after_our_close: false,
        lingering: false,
    },
    Rule {
        reason: CloseReason::FinWaitTimeout,
        abortive: true,
        clock: Clock::FinWait,
        gate: Gate::Always,
        fins: FinSet::of(&[Ours]),
        after_our_close: true,
        lingering: true,
    },
    Rule {
        reason: CloseReason::WriteIdleTimeout,
        abortive: true,
        clock: Clock::WriteIdle,
        gate: Gate::Queued,
        fins: ANY,
        after_our_close: true,
        lingering: true,
    },
    Rule {
        reason: CloseReason::SlowSend,
        abortive: true,
        clock: Clock::SendRate,
        gate: Gate::Queued,
        fins: ANY,
        after_our_close: true,
        lingering: true,
    },
    Rule {
        reason: CloseReason::SlowReceive,
        abortive: false,
        clock: Clock::ReceiveRate,
        gate: Gate::Owed,
        fins: WHILE_PEER_SENDS,
        after_our_close: false,
        lingering: false,
    },
    Rule {
        reason: CloseReason::ReadIdleTimeout,
        abortive: false,
        clock: Clock::ReadIdle,
        gate: Gate::Always,
        fins: WHILE_PEER_SENDS,
        after_our_close: false,
        lingering: false,
    },
    Rule {
        reason: CloseReason::IdleTimeout,
        abortive: false,
        clock: Clock::Idle,
        gate: Gate::Always,
        fins: UNTIL_BOTH,
        after_our_close: false,
        lingering: false,
    },
];
