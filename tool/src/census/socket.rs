//! One TCP socket as a kernel dump reports it (sock_diag or `/proc/net/tcp`), and how long
//! it has lingered in its state.
//!
//! The kernel keeps no "entered this state at" time, so the age of a socket is read from
//! what it does keep. Where that only bounds the age from below, the age is marked as a
//! lower bound ("at least"); a watcher that follows sockets by cookie from census to
//! census ([`AgeTracker`](crate::AgeTracker)) raises it as time passes.
//!
//! | State | Lingered = | Exact? |
//! |---|---|---|
//! | `CLOSE_WAIT`, `FIN_WAIT_2` | `tcpi_last_ack_recv`: the peer's FIN (or the ACK of ours) was the last thing it sent; `tcpi_last_data_recv` would count from its last *data* | at least, when a keepalive or retransmission timer runs: a keepalive reply or the ACK of data sent since is a later ACK |
//! | `FIN_WAIT_1`, `LAST_ACK` | from our FIN's retransmissions: the timeouts passed (`tcpi_rto` halved back for each of `tcpi_retransmits`) plus the current one's elapsed part | at least (a tail-loss probe may come before the first timeout); unknown when the FIN alone is not what is retransmitted (no retransmission yet, data queued before the FIN, a zero-window probe) |
//! | `CLOSING` | the longer of the above and `tcpi_last_ack_recv` (the peer's FIN moved us here; it sends only repeats of it since) | at least |
//! | `ESTABLISHED` | the shorter of `tcpi_last_data_recv` and `tcpi_last_data_sent` | idle time |
//! | `TIME_WAIT` | 60 s − the time-wait timer | `TCP_TIMEWAIT_LEN` is fixed at 60 s |
//! | orphaned `FIN_WAIT_2` in a time-wait slot | `tcp_fin_timeout` − its timer | approximate: the kernel may lengthen the timeout to 3.5 RTO |
//! | `SYN_RECV`, `SYN_SENT` | from the retransmission count and timer, initial RTO 1 s doubling | approximate |
//!
//! `tcpi_last_ack_recv` and `tcpi_last_data_sent` are not used for the states that wait
//! for an ACK: both may predate the state (a peer that vanished before we closed, data
//! sent long before the close), which once dated a 0.3 s old `FIN_WAIT_1` socket 4 min
//! 50 s.

use std::net::SocketAddr;
use std::time::Duration;

use tcp_hygiene::KernelState;

/// `TCP_TIMEWAIT_LEN`: how long Linux keeps a socket in `TIME_WAIT` (not tunable).
pub(crate) const TIME_WAIT_LEN: Duration = Duration::from_secs(60);
/// `TCP_TIMEOUT_INIT`: the first retransmission timeout of a SYN or SYN-ACK.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// `TCP_RTO_MAX`.
const MAX_RTO: Duration = Duration::from_secs(120);

/// One socket from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketRecord {
    pub(crate) state: KernelState,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// The socket's inode; 0 when no descriptor refers to it: orphans, `TIME_WAIT`,
    /// handshakes in progress, and connections still waiting in an accept queue.
    pub(crate) inode: u64,
    /// `LISTEN`: connections waiting to be accepted. Others: bytes received, not read.
    pub(crate) recv_queue: u32,
    /// `LISTEN`: the backlog, when the source reports it (sock_diag does, `/proc` does not).
    pub(crate) backlog: Option<u32>,
    /// How long the socket has been in its state, when the source can tell.
    pub(crate) lingered: Option<Duration>,
    /// Whether `lingered` is only a lower bound: the socket has been in its state at
    /// least that long.
    pub(crate) lower_bound: bool,
    /// For a lower bound, what the socket's age cannot exceed, when the kernel says: the
    /// diagnosis uses it to tell a pile that may be old from churn.
    pub(crate) upper_bound: Option<Duration>,
    /// sock_diag's socket cookie and interface: what `SOCK_DESTROY` needs to address this
    /// very socket and no later one with the same addresses.
    pub(crate) cookie: Option<[u8; 8]>,
    pub(crate) interface: u32,
}

impl SocketRecord {
    /// Closed by its application and still in the kernel: no descriptor, in a state only
    /// a `close()` leads to without one. (`CLOSE_WAIT` and `ESTABLISHED` without a
    /// descriptor are connections nobody has accepted yet, not orphans.)
    pub(crate) fn is_orphan(&self) -> bool {
        use KernelState::*;
        self.inode == 0 && matches!(self.state, FinWait1 | FinWait2 | LastAck | Closing)
    }

    /// Completed handshakes waiting in a listener's accept queue.
    pub(crate) fn awaits_accept(&self) -> bool {
        use KernelState::*;
        self.inode == 0 && matches!(self.state, Established | CloseWait)
    }
}

/// What `tcp_info` keeps that dates a socket (full sockets only): times in milliseconds
/// before now, the current retransmission timeout and how often the head of the queue
/// has been retransmitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpTimes {
    pub(crate) last_data_sent_ms: u32,
    pub(crate) last_data_recv_ms: u32,
    pub(crate) last_ack_recv_ms: u32,
    /// `tcpi_rto`, microseconds: the retransmission timeout now running (doubled by each
    /// retransmission).
    pub(crate) rto_us: u32,
    /// `tcpi_retransmits`: retransmissions of the unacknowledged head so far.
    pub(crate) retransmits: u8,
    /// Sequence space sent or queued and not acknowledged (`idiag_wqueue`): 1 when our
    /// FIN alone waits for its ACK.
    pub(crate) unacked: u32,
}

/// How long a socket has been in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Age {
    pub(crate) lingered: Duration,
    /// Whether `lingered` is only a lower bound.
    pub(crate) lower_bound: bool,
    /// For a lower bound, the most it can be, when known.
    pub(crate) upper_bound: Option<Duration>,
}

impl Age {
    fn exact(lingered: Duration) -> Option<Age> {
        Some(Age {
            lingered,
            lower_bound: false,
            upper_bound: None,
        })
    }

    fn at_least(lingered: Duration) -> Option<Age> {
        Some(Age {
            lingered,
            lower_bound: true,
            upper_bound: None,
        })
    }
}

/// The timer a dump reports for a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Retransmission (of data, a SYN or a SYN-ACK): time left and retransmissions so far.
    Retransmit { left: Duration, retransmits: u8 },
    /// The time-wait slot's timer (`TIME_WAIT`, or an orphaned `FIN_WAIT_2`): time left.
    TimeWait { left: Duration },
    /// Keepalive: its probes' replies are ACKs that reset `tcpi_last_ack_recv`. Only
    /// sock_diag reports it (Linux).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    KeepAlive,
    /// None, or a zero-window probe: says nothing about age.
    Other,
}

/// How long a socket in `state` has lingered, from what the dump reported.
/// `fin_timeout` is the namespace's `tcp_fin_timeout`.
pub(crate) fn lingered(
    state: KernelState,
    times: Option<TcpTimes>,
    timer: Timer,
    fin_timeout: Duration,
) -> Option<Age> {
    use KernelState::*;
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    match (state, times, timer) {
        (TimeWait, _, Timer::TimeWait { left }) => Age::exact(TIME_WAIT_LEN.saturating_sub(left)),
        (FinWait2, None, Timer::TimeWait { left }) => Age::exact(fin_timeout.saturating_sub(left)),
        (CloseWait | FinWait2, Some(t), Timer::Other | Timer::TimeWait { .. }) => {
            Age::exact(ms(t.last_ack_recv_ms))
        }
        (CloseWait | FinWait2, Some(t), Timer::KeepAlive | Timer::Retransmit { .. }) => {
            // The state began after the last data that preceded it: the peer's last data
            // (CLOSE_WAIT: its FIN came after it), or ours (FIN_WAIT_2: our FIN did).
            let before = if state == CloseWait {
                t.last_data_recv_ms
            } else {
                t.last_data_sent_ms
            };
            Some(Age {
                lingered: ms(t.last_ack_recv_ms),
                lower_bound: true,
                upper_bound: Some(ms(before.max(t.last_ack_recv_ms))),
            })
        }
        (FinWait1 | LastAck, Some(t), timer) => since_our_fin(t, timer),
        (Closing, Some(t), timer) => {
            let fin = since_our_fin(t, timer).map_or(Duration::ZERO, |a| a.lingered);
            Age::at_least(fin.max(ms(t.last_ack_recv_ms)))
        }
        (Established, Some(t), _) => Age::exact(ms(t.last_data_recv_ms.min(t.last_data_sent_ms))),
        (SynRecv | SynSent | NewSynRecv, _, Timer::Retransmit { left, retransmits }) => {
            Age::exact(handshake_age(left, retransmits))
        }
        _ => None,
    }
}

/// At least the time since our FIN was first sent, from its retransmissions: each one
/// doubled the timeout, so the ones passed were `rto/2`, `rto/4`, … (`rto` the one now
/// running), plus the part of the current one elapsed. A lower bound: a tail-loss probe
/// may have resent the FIN before the first of those timeouts started. `None` when the
/// kernel does not date the FIN: no retransmission yet (the timer running may be the
/// tail-loss probe's), data queued before the FIN is what is retransmitted (it may have
/// been sent before the close), or a zero-window probe instead.
fn since_our_fin(t: TcpTimes, timer: Timer) -> Option<Age> {
    let Timer::Retransmit { left, retransmits } = timer else {
        return None;
    };
    let retransmits = retransmits.max(t.retransmits).min(16);
    if retransmits == 0 || t.unacked > 1 {
        return None;
    }
    let rto = Duration::from_micros(u64::from(t.rto_us));
    let passed: Duration = (1..=retransmits).map(|k| rto / (1u32 << k)).sum();
    Age::at_least(passed + rto.saturating_sub(left))
}

/// Time since the first SYN (or SYN-ACK) of a handshake that has been retransmitted
/// `retransmits` times and whose current timer has `left` to run: the timeouts double
/// from 1 s, capped at 120 s.
fn handshake_age(left: Duration, retransmits: u8) -> Duration {
    let timeout = |n: u8| {
        INITIAL_RTO
            .checked_mul(1u32 << n.min(16))
            .map_or(MAX_RTO, |t| t.min(MAX_RTO))
    };
    let elapsed: Duration = (0..retransmits).map(timeout).sum();
    (elapsed + timeout(retransmits)).saturating_sub(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelState::*;

    const FIN: Duration = Duration::from_secs(60);

    fn times(sent: u32, recv: u32, ack: u32) -> Option<TcpTimes> {
        Some(TcpTimes {
            last_data_sent_ms: sent,
            last_data_recv_ms: recv,
            last_ack_recv_ms: ack,
            ..TcpTimes::default()
        })
    }

    fn exact(ms: u64) -> Option<Age> {
        Age::exact(Duration::from_millis(ms))
    }

    fn at_least(ms: u64) -> Option<Age> {
        Age::at_least(Duration::from_millis(ms))
    }

    #[test]
    fn close_wait_counts_from_the_last_ack_not_the_last_data() {
        let t = times(9_000, 8_000, 1_500);
        assert_eq!(lingered(CloseWait, t, Timer::Other, FIN), exact(1_500));
        // Under keepalive the last ACK may be a probe's reply: a lower bound, and the
        // last data before the state an upper one.
        let upper = |ms| {
            at_least(1_500).map(|a| Age {
                upper_bound: Some(Duration::from_millis(ms)),
                ..a
            })
        };
        assert_eq!(lingered(CloseWait, t, Timer::KeepAlive, FIN), upper(8_000));
        assert_eq!(lingered(FinWait2, t, Timer::KeepAlive, FIN), upper(9_000));
    }

    /// A peer that vanished 7 s before our close, and data sent 5 s before it, say
    /// nothing about the time since the close.
    #[test]
    fn waiting_for_an_ack_counts_from_our_fin() {
        let rto = |rto_ms: u32, retransmits: u8, unacked: u32| TcpTimes {
            last_data_sent_ms: 5_000,
            last_data_recv_ms: 9_000,
            last_ack_recv_ms: 7_000,
            rto_us: rto_ms * 1000,
            retransmits,
            unacked,
        };
        let timer = |left_ms, retransmits| Timer::Retransmit {
            left: Duration::from_millis(left_ms),
            retransmits,
        };
        // The FIN alone, retransmitted 5 times from a 200 ms RTO (0.2 + 0.4 + 0.8 + 1.6
        // + 3.2 s passed), the 6.4 s timeout now running with 4 s left: at least 8.6 s.
        let last_ack = lingered(LastAck, Some(rto(6_400, 5, 1)), timer(4_000, 5), FIN);
        assert_eq!(last_ack, at_least(8_600));
        // Not yet retransmitted (the timer may be a tail-loss probe's): unknown.
        let young = lingered(FinWait1, Some(rto(200, 0, 1)), timer(150, 0), FIN);
        assert_eq!(young, None);
        // Data before the FIN being retransmitted: it may predate the close.
        let data = lingered(FinWait1, Some(rto(800, 2, 1_000)), timer(100, 2), FIN);
        assert_eq!(data, None);
        // Zero window: probes, no retransmission.
        let probe = lingered(FinWait1, Some(rto(200, 0, 1_000)), Timer::Other, FIN);
        assert_eq!(probe, None);
        // CLOSING: since the peer's FIN (its last segment) at least.
        let closing = lingered(Closing, Some(rto(200, 0, 1)), timer(100, 0), FIN);
        assert_eq!(closing, at_least(7_000));
    }

    #[test]
    fn time_wait_slots_count_down_from_their_length() {
        let tw = lingered(
            TimeWait,
            None,
            Timer::TimeWait {
                left: Duration::from_secs(45),
            },
            FIN,
        );
        assert_eq!(tw, exact(15_000));
        let orphan = lingered(
            FinWait2,
            None,
            Timer::TimeWait {
                left: Duration::from_secs(25),
            },
            Duration::from_secs(30),
        );
        assert_eq!(orphan, exact(5_000));
    }

    #[test]
    fn handshakes_add_up_their_doubling_timeouts() {
        let timer = |left_ms, retransmits| Timer::Retransmit {
            left: Duration::from_millis(left_ms),
            retransmits,
        };
        // First SYN-ACK, 300 ms ago.
        assert_eq!(lingered(SynRecv, None, timer(700, 0), FIN), exact(300));
        // Third retransmission pending: 1 + 2 + 4 s passed, 8 s timer with 3 s left.
        assert_eq!(lingered(SynRecv, None, timer(3_000, 3), FIN), exact(12_000));
        // Capped at 120 s per timeout, never overflowing.
        assert!(lingered(SynSent, None, timer(0, 255), FIN).is_some());
    }

    #[test]
    fn unknown_without_the_kernel_times() {
        assert_eq!(lingered(CloseWait, None, Timer::Other, FIN), None);
        assert_eq!(lingered(Listen, times(1, 1, 1), Timer::Other, FIN), None);
    }
}
