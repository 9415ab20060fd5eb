//! The rules, as pure functions: no sockets, no clocks of the system, no tasks.
//!
//! The supervisor is the I/O around this module. It takes a [`Sample`] of a connection
//! (the stream's counters, its flags, and on Linux the kernel's `TCP_INFO`), asks
//! [`Watch::look`] what the rules say at `now`, and does what the answer says: close the
//! connection (and how), end its task, look again at some instant, or ask the stream to
//! say when data is queued or owed. Everything that decides lives here, so that it is
//! tested with made-up samples and instants (`tests.rs`), with random sequences of events
//! (`props.rs`), and the supervisor only carries the decisions out.
//!
//! - [`table`]: the rules as data — reason, graceful or abortive, clock, and the states
//!   in which each applies.
//! - [`evaluate`]: one pure function from (clocks, state, sample, limits, now) to an
//!   [`Outcome`].
//! - [`Watch`]: what the supervisor keeps per connection (an 8-byte [`Entry`], and the
//!   clocks apart), and the connection's life around the rules: who closed it, its task,
//!   its part in a drain.
//! - [`Drain`]: a drain's deadlines and its report.
//! - [`DeadlineHeap`]: one heap of deadlines for every connection, lingering ones too.
//!
//! Time is nanoseconds since the listener's epoch ([`Nanos`]); deadlines saturate.

mod clock;
mod drain;
mod heap;
pub(crate) mod table;
mod watch;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::time::Duration;

use clock::{look_quiet, CounterClock, RateWindow, Silence, TIMESTAMP_LIMIT};
pub(crate) use clock::{ReadIdleClock, Verdict};
pub(crate) use drain::{Drain, DrainStep};
pub(crate) use heap::DeadlineHeap;
use table::{Clock, Fins, Gate, Rule, State, RULES};
pub(crate) use watch::{Entry, Fate, Look, Watch, WriteWatch};

use crate::config::{Config, MinDataRate};
use crate::tcp_info::TcpInfo;

/// An instant on the rules' clock: nanoseconds since the listener's epoch.
pub(crate) type Nanos = u64;

/// A millisecond.
pub(crate) const MS: Nanos = 1_000_000;

/// `d` in nanoseconds, saturating (about 584 years).
pub(crate) fn nanos(d: Duration) -> Nanos {
    d.as_nanos().try_into().unwrap_or(Nanos::MAX)
}

/// What the kernel says of a connection (`TCP_INFO`), as far as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Kernel {
    /// `tcpi_bytes_received`: the peer's FIN counts one.
    pub(crate) received: u64,
    /// `tcpi_bytes_acked`: our FIN counts one.
    pub(crate) acked: u64,
    /// Data queued for the peer, unsent or unacknowledged.
    pub(crate) queued: bool,
    /// Since data was last received, and sent.
    pub(crate) since_received: Nanos,
    pub(crate) since_sent: Nanos,
    /// The peer's FIN has arrived.
    pub(crate) peer_fin: bool,
    /// The connection is over (`TCP_CLOSE`).
    pub(crate) closed: bool,
}

impl From<TcpInfo> for Kernel {
    fn from(info: TcpInfo) -> Self {
        Self {
            received: info.bytes_received,
            acked: info.bytes_acked,
            queued: info.has_pending_send(),
            since_received: u64::from(info.last_data_recv_ms) * MS,
            since_sent: u64::from(info.last_data_sent_ms) * MS,
            peer_fin: info.state.peer_fin_received(),
            closed: info.state == crate::tcp_info::KernelState::Close,
        }
    }
}

/// Whether the peer owes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Owed {
    #[default]
    No,
    /// As far as the stream's marks tell: the application waits in a read, and the last
    /// thing that moved was the peer's data. A peer silent for a whole window is
    /// excused (it may be done: the marks cannot tell).
    Likely,
    /// A framework serve knows: a handler waits for more of a request body.
    Yes,
}

/// A connection as of one look, taken by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sample {
    /// Bytes the application has read, and written (the stream's counters).
    pub(crate) read: u64,
    pub(crate) written: u64,
    /// The peer's FIN was seen (by the kernel watcher, or as EOF by the application).
    pub(crate) peer_fin: bool,
    /// Our FIN is out (the application's shutdown, or the library's close).
    pub(crate) our_fin: bool,
    /// Whether the peer owes data (see [`Gate::Owed`]).
    pub(crate) owes: Owed,
    /// A framework serve holds data the peer has not made room for (see
    /// [`Gate::Queued`]).
    pub(crate) user_queued: bool,
    /// The kernel's view, where there is one (Linux).
    pub(crate) kernel: Option<Kernel>,
}

impl Sample {
    /// Which FINs have gone through.
    pub(crate) fn fins(&self) -> Fins {
        let peer = self.peer_fin || self.kernel.is_some_and(|k| k.peer_fin);
        Fins::of(peer, self.our_fin)
    }

    /// Bytes of data received from the peer (a FIN is no data).
    pub(crate) fn received(&self) -> u64 {
        match self.kernel {
            Some(k) => k.received.saturating_sub(u64::from(k.peer_fin)),
            None => self.read,
        }
    }

    /// Whether data is queued for the peer (in the kernel, or held by a framework serve
    /// for lack of an HTTP/2 window); without the kernel's view, as if it were.
    pub(crate) fn queued(&self) -> bool {
        self.user_queued || self.kernel.map_or(true, |k| k.queued)
    }

    fn kernel_received(&self) -> u64 {
        self.kernel.map_or(0, |k| k.received)
    }

    fn kernel_acked(&self) -> u64 {
        self.kernel.map_or(0, |k| k.acked)
    }

    /// The activity a counted clock watches: any change means "not idle".
    fn count(&self, clock: Clock) -> u64 {
        let (r, w, kr, ka) = (
            self.read,
            self.written,
            self.kernel_received(),
            self.kernel_acked(),
        );
        match clock {
            Clock::Idle => r.wrapping_add(w).wrapping_add(kr).wrapping_add(ka),
            Clock::ReadIdle => r.wrapping_add(kr),
            // Our writes and the peer's acknowledgements of them.
            Clock::CloseWait => w.wrapping_add(ka),
            // The peer's acknowledgements and its bytes.
            Clock::FinWait => r.wrapping_add(kr).wrapping_add(ka),
            Clock::WriteIdle => match self.kernel {
                Some(k) => k.acked,
                None => w,
            },
            Clock::SendRate => ka,
            Clock::ReceiveRate => self.received(),
            Clock::Age | Clock::FirstByte => 0,
        }
    }

    /// How long ago the kernel last saw what `clock` watches, where it says.
    fn quiet_for(&self, clock: Clock) -> Option<Nanos> {
        let k = self.kernel?;
        match clock {
            Clock::Idle => Some(k.since_received.min(k.since_sent)),
            Clock::ReadIdle => Some(k.since_received),
            _ => None,
        }
    }
}

/// A minimum data rate on the rules' clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) bytes_per_second: u64,
    pub(crate) grace: Nanos,
}

impl Rate {
    fn least_in(&self, elapsed: Nanos) -> u64 {
        let bytes = u128::from(self.bytes_per_second) * u128::from(elapsed) / 1_000_000_000;
        bytes.try_into().unwrap_or(u64::MAX)
    }
}

impl From<MinDataRate> for Rate {
    fn from(rate: MinDataRate) -> Self {
        Self {
            bytes_per_second: rate.bytes_per_second(),
            grace: nanos(rate.grace()),
        }
    }
}

/// The longest [`Limits::write_watch_pause`].
const WRITE_WATCH_PAUSE_MAX: Nanos = 250 * MS;

/// The rules' settings on the rules' clock; `None` turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Limits {
    /// `max_connection_age`, with the grace a framework serve gives.
    pub(crate) max_age: Option<Nanos>,
    pub(crate) first_byte: Option<Nanos>,
    pub(crate) idle: Option<Nanos>,
    pub(crate) read_idle: Option<Nanos>,
    pub(crate) write_idle: Option<Nanos>,
    pub(crate) close_wait: Option<Nanos>,
    pub(crate) fin_wait: Option<Nanos>,
    pub(crate) min_receive_rate: Option<Rate>,
    pub(crate) min_send_rate: Option<Rate>,
}

impl Limits {
    /// The limits of `config`, for a listener whose connections a framework serve owns
    /// (`served`: the age has its grace, the rates their serve defaults) or not.
    pub(crate) fn of(config: &Config, served: bool) -> Self {
        let n = |d: Option<Duration>| d.map(nanos);
        let age_grace = match served {
            true => config.max_connection_age_grace(),
            false => Duration::ZERO,
        };
        let (receive, send) = config.rates(served);
        Self {
            max_age: n(config
                .max_connection_age()
                .map(|a| a.saturating_add(age_grace))),
            first_byte: n(config.first_byte_timeout()),
            idle: n(config.idle_timeout()),
            read_idle: n(config.read_idle_timeout()),
            write_idle: n(config.write_idle_timeout()),
            close_wait: n(config.close_wait_timeout()),
            fin_wait: n(config.fin_wait_timeout()),
            min_receive_rate: receive.map(Rate::from),
            min_send_rate: send.map(Rate::from),
        }
    }

    /// The timeout (or the rate's grace) of the rule on `clock`; `None`: the rule is off.
    fn timeout(&self, clock: Clock) -> Option<Nanos> {
        match clock {
            Clock::Age => self.max_age,
            Clock::FirstByte => self.first_byte,
            Clock::Idle => self.idle,
            Clock::ReadIdle => self.read_idle,
            Clock::CloseWait => self.close_wait,
            Clock::FinWait => self.fin_wait,
            Clock::WriteIdle => self.write_idle,
            Clock::SendRate => self.min_send_rate.map(|r| r.grace),
            Clock::ReceiveRate => self.min_receive_rate.map(|r| r.grace),
        }
    }

    /// How long a look may wait, after the stream said it wrote, before it asks to hear
    /// of the next write (see [`Watch::write_watch`](watch::Watch::write_watch)): a
    /// sixteenth of the shortest timeout of the rules that wait for queued data, between
    /// 1 ms and 250 ms. A rule whose data is queued meanwhile starts that much late at
    /// most.
    pub(crate) fn write_watch_pause(&self) -> Nanos {
        RULES
            .iter()
            .filter(|rule| rule.gate == Gate::Queued)
            .filter_map(|rule| self.timeout(rule.clock))
            .min()
            .map_or(WRITE_WATCH_PAUSE_MAX, |t| {
                (t / 16).clamp(MS, WRITE_WATCH_PAUSE_MAX)
            })
    }

    fn rate(&self, clock: Clock) -> Option<Rate> {
        match clock {
            Clock::SendRate => self.min_send_rate,
            Clock::ReceiveRate => self.min_receive_rate,
            _ => None,
        }
    }
}

/// The running clocks of one connection, by rule (index in [`RULES`]); boxed in its
/// [`Watch`], and only while one runs (the supervisor keeps the box apart from the
/// connection's [`Entry`]). The clocks that read the kernel's timestamps, and the
/// absolute ones, keep no state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Clocks {
    counters: Vec<(u8, CounterClock)>,
    windows: Vec<(u8, RateWindow)>,
    /// When the connection's owner was asked to close it (see [`Look::AskOwner`]).
    asked_at: Option<Nanos>,
}

/// The entry of `rule` in `list`, made by `start` if there is none.
fn entry<T>(list: &mut Vec<(u8, T)>, rule: usize, start: impl FnOnce() -> T) -> &mut T {
    let at = match list.iter().position(|(r, _)| usize::from(*r) == rule) {
        Some(at) => at,
        None => {
            list.push((rule as u8, start()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

impl Clocks {
    fn stop(&mut self, rule: usize) {
        self.counters.retain(|(r, _)| usize::from(*r) != rule);
        self.windows.retain(|(r, _)| usize::from(*r) != rule);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.windows.is_empty() && self.asked_at.is_none()
    }
}

/// What the rules say after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Outcome {
    /// The rule that expired (the first in the table's order), if one did.
    pub(crate) expired: Option<&'static Rule>,
    /// When to look again, if any rule runs (and none expired).
    pub(crate) next: Option<Nanos>,
    /// A rule waits for data to be queued: the stream should say when it writes.
    pub(crate) watch_writes: bool,
    /// A rule waits for the peer to owe data: the stream should say when it does.
    pub(crate) watch_reads: bool,
}

/// Evaluates every rule for a connection in `state`, accepted at `accepted`, as `sample`
/// shows it at `now`: starts the clocks of the rules that now apply, stops those that no
/// longer do, and says whether one expired, when to look next, and what to watch.
pub(crate) fn evaluate(
    clocks: &mut Option<Box<Clocks>>,
    state: State,
    sample: &Sample,
    limits: &Limits,
    accepted: Nanos,
    now: Nanos,
) -> Outcome {
    let mut out = Outcome::default();
    let merge = |out: &mut Outcome, rule: &'static Rule, verdict: Verdict| match verdict {
        Verdict::Expired => {
            out.expired.get_or_insert(rule);
        }
        Verdict::CheckAt(at) => out.next = Some(out.next.map_or(at, |n| n.min(at))),
    };
    let at_or_expired = |at: Nanos| {
        if now >= at {
            Verdict::Expired
        } else {
            Verdict::CheckAt(at)
        }
    };
    for (index, rule) in RULES.iter().enumerate() {
        let Some(timeout) = limits.timeout(rule.clock) else {
            continue;
        };
        let gate_open = match rule.gate {
            Gate::Always => true,
            Gate::NoDataYet => sample.received() == 0,
            Gate::Queued => {
                sample.queued() && (rule.clock != Clock::SendRate || sample.kernel.is_some())
            }
            Gate::Owed => sample.owes != Owed::No,
        };
        let applies = rule.applies(state);
        if !(applies && gate_open) {
            if let Some(c) = clocks.as_deref_mut() {
                c.stop(index);
            }
            if applies {
                match rule.gate {
                    Gate::Queued if sample.kernel.is_some() => out.watch_writes = true,
                    Gate::Owed => out.watch_reads = true,
                    _ => {}
                }
            }
            continue;
        }
        let verdict = match rule.clock {
            Clock::Age | Clock::FirstByte => at_or_expired(accepted.saturating_add(timeout)),
            Clock::Idle | Clock::ReadIdle
                if timeout < TIMESTAMP_LIMIT && sample.kernel.is_some() =>
            {
                let quiet = sample.quiet_for(rule.clock).unwrap_or(0);
                // Never quiet for longer than the connection has existed.
                look_quiet(timeout, quiet.min(now.saturating_sub(accepted)), now)
            }
            clock => {
                let count = sample.count(clock);
                let c = clocks.get_or_insert_with(Box::default);
                match limits.rate(clock) {
                    None => {
                        // An idle clock counts from accept, when every counter was zero;
                        // the others from when their rule started to apply.
                        let (start_count, since) = match clock {
                            Clock::Idle | Clock::ReadIdle => (0, accepted.min(now)),
                            _ => (count, now),
                        };
                        entry(&mut c.counters, index, || {
                            CounterClock::new(timeout, start_count, since)
                        })
                        .check(timeout, count, now)
                    }
                    Some(rate) => {
                        let silence = match (clock, sample.owes) {
                            (Clock::SendRate, _) | (_, Owed::Yes) => Silence::Counts,
                            _ => Silence::Excused,
                        };
                        let quiet = sample.kernel.map(|k| k.since_received);
                        entry(&mut c.windows, index, || RateWindow::new(count, now)).check(
                            count,
                            rate.grace,
                            |elapsed| rate.least_in(elapsed),
                            silence,
                            quiet,
                            now,
                        )
                    }
                }
            }
        };
        merge(&mut out, rule, verdict);
    }
    if clocks.as_deref().is_some_and(Clocks::is_empty) {
        *clocks = None;
    }
    if out.expired.is_some() {
        out.next = None;
    }
    out
}
