//! One TCP socket as a kernel dump reports it (sock_diag or `/proc/net/tcp`), and how long
//! it has lingered in its state.
//!
//! The kernel keeps no "entered this state at" time, so the age of a socket is read from
//! what it does keep:
//!
//! | State | Lingered = | Why |
//! |---|---|---|
//! | `CLOSE_WAIT`, `FIN_WAIT_2` | `tcpi_last_ack_recv` | the peer's FIN (or the ACK of ours) was the last thing it sent; `tcpi_last_data_recv` would count from its last *data* |
//! | `FIN_WAIT_1`, `LAST_ACK`, `CLOSING` | the longer of `tcpi_last_ack_recv` and `tcpi_last_data_sent` | stuck waiting for an ACK: a vanished peer sends no ACKs (we keep retransmitting), a peer with a zero window ACKs our probes (we send no data) |
//! | `ESTABLISHED` | the shorter of `tcpi_last_data_recv` and `tcpi_last_data_sent` | idle time |
//! | `TIME_WAIT` | 60 s − the time-wait timer | `TCP_TIMEWAIT_LEN` is fixed at 60 s |
//! | orphaned `FIN_WAIT_2` in a time-wait slot | `tcp_fin_timeout` − its timer | approximate: the kernel may lengthen the timeout to 3.5 RTO |
//! | `SYN_RECV`, `SYN_SENT` | from the retransmission count and timer, initial RTO 1 s doubling | approximate |
//!
//! Any ACK counts as the peer being heard, keepalive replies included: with keepalive on,
//! a `CLOSE_WAIT` socket never looks older than the keepalive time.

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

/// The times `tcp_info` keeps, in milliseconds before now (full sockets only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpTimes {
    pub(crate) last_data_sent_ms: u32,
    pub(crate) last_data_recv_ms: u32,
    pub(crate) last_ack_recv_ms: u32,
}

/// The timer a dump reports for a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Retransmission (of data, a SYN or a SYN-ACK): time left and retransmissions so far.
    Retransmit { left: Duration, retransmits: u8 },
    /// The time-wait slot's timer (`TIME_WAIT`, or an orphaned `FIN_WAIT_2`): time left.
    TimeWait { left: Duration },
    /// None, keepalive, or a zero-window probe: says nothing about age.
    Other,
}

/// How long a socket in `state` has lingered, from what the dump reported.
/// `fin_timeout` is the namespace's `tcp_fin_timeout`.
pub(crate) fn lingered(
    state: KernelState,
    times: Option<TcpTimes>,
    timer: Timer,
    fin_timeout: Duration,
) -> Option<Duration> {
    use KernelState::*;
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    match (state, times, timer) {
        (TimeWait, _, Timer::TimeWait { left }) => Some(TIME_WAIT_LEN.saturating_sub(left)),
        (FinWait2, None, Timer::TimeWait { left }) => Some(fin_timeout.saturating_sub(left)),
        (CloseWait | FinWait2, Some(t), _) => Some(ms(t.last_ack_recv_ms)),
        (FinWait1 | LastAck | Closing, Some(t), _) => {
            Some(ms(t.last_ack_recv_ms.max(t.last_data_sent_ms)))
        }
        (Established, Some(t), _) => Some(ms(t.last_data_recv_ms.min(t.last_data_sent_ms))),
        (SynRecv | SynSent | NewSynRecv, _, Timer::Retransmit { left, retransmits }) => {
            Some(handshake_age(left, retransmits))
        }
        _ => None,
    }
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
        })
    }

    #[test]
    fn close_wait_counts_from_the_last_ack_not_the_last_data() {
        let t = times(9_000, 8_000, 1_500);
        let age = lingered(CloseWait, t, Timer::Other, FIN);
        assert_eq!(age, Some(Duration::from_millis(1_500)));
    }

    #[test]
    fn waiting_for_an_ack_counts_the_longer_silence() {
        // Vanished peer: no ACKs for 7 s, our retransmissions 200 ms ago.
        let gone = lingered(LastAck, times(200, 0, 7_000), Timer::Other, FIN);
        assert_eq!(gone, Some(Duration::from_secs(7)));
        // Zero window: the peer ACKs our probes, we sent no data for 5 s.
        let full = lingered(FinWait1, times(5_000, 0, 100), Timer::Other, FIN);
        assert_eq!(full, Some(Duration::from_secs(5)));
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
        assert_eq!(tw, Some(Duration::from_secs(15)));
        let orphan = lingered(
            FinWait2,
            None,
            Timer::TimeWait {
                left: Duration::from_secs(25),
            },
            Duration::from_secs(30),
        );
        assert_eq!(orphan, Some(Duration::from_secs(5)));
    }

    #[test]
    fn handshakes_add_up_their_doubling_timeouts() {
        let timer = |left_ms, retransmits| Timer::Retransmit {
            left: Duration::from_millis(left_ms),
            retransmits,
        };
        // First SYN-ACK, 300 ms ago.
        assert_eq!(
            lingered(SynRecv, None, timer(700, 0), FIN),
            Some(Duration::from_millis(300))
        );
        // Third retransmission pending: 1 + 2 + 4 s passed, 8 s timer with 3 s left.
        assert_eq!(
            lingered(SynRecv, None, timer(3_000, 3), FIN),
            Some(Duration::from_secs(12))
        );
        // Capped at 120 s per timeout, never overflowing.
        assert!(lingered(SynSent, None, timer(0, 255), FIN).is_some());
    }

    #[test]
    fn unknown_without_the_kernel_times() {
        assert_eq!(lingered(CloseWait, None, Timer::Other, FIN), None);
        assert_eq!(lingered(Listen, times(1, 1, 1), Timer::Other, FIN), None);
    }
}
