//! The connection state machine as the library sees it, and why it closed connections.

use std::fmt;

use crate::tcp_info::TcpInfo;

/// Where a connection is, from this end's point of view.
///
/// "Half-closed" states are legal TCP: one direction is finished, the other still works.
/// They are not "half-open" (the peer is gone and we do not know it yet); half-open
/// connections look [`Open`](Self::Open) until keepalive, `TCP_USER_TIMEOUT` or an idle
/// timeout finds them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Both directions open (`ESTABLISHED`).
    Open,
    /// The peer has sent its FIN; we may still write. Our kernel socket is in
    /// `CLOSE_WAIT` until we close or shut down our write half.
    PeerClosed,
    /// We have shut down our write half (sent FIN); the peer may still send. Our kernel
    /// socket is in `FIN_WAIT_1`/`FIN_WAIT_2`.
    LocallyClosed,
    /// Both directions are finished, or the library closed the connection.
    Closed,
}

impl ConnectionState {
    /// All states, in declaration order.
    pub(crate) const ALL: [ConnectionState; 4] = [
        ConnectionState::Open,
        ConnectionState::PeerClosed,
        ConnectionState::LocallyClosed,
        ConnectionState::Closed,
    ];

    /// Every state, in declaration order (more may come: the enum is `#[non_exhaustive]`).
    pub fn all() -> impl Iterator<Item = ConnectionState> {
        Self::ALL.into_iter()
    }

    /// A short, stable, snake_case name (used in logs and JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Open => "open",
            ConnectionState::PeerClosed => "peer_closed",
            ConnectionState::LocallyClosed => "locally_closed",
            ConnectionState::Closed => "closed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection ended, when it did not end the ordinary way (the application closing
/// it, or both sides exchanging FINs): the library closed it (one of its rules, a drain,
/// a request through the [`Controller`](crate::Controller)), or the kernel ended it (the
/// peer's reset, a keepalive or user timeout). Each such connection has exactly one, the
/// first, and is counted once under it ([`Stats::closed`](crate::Stats::closed)).
///
/// More reasons may come (the enum is `#[non_exhaustive]`): match with a wildcard arm, and
/// iterate with [`CloseReason::all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent FIN and we wrote nothing for `close_wait_timeout` (a `CLOSE_WAIT`
    /// that would otherwise linger until the process exits).
    CloseWaitTimeout,
    /// We sent FIN and the peer did not send its own within `fin_wait_timeout`
    /// (`FIN_WAIT_2`).
    FinWaitTimeout,
    /// No byte in either direction for `idle_timeout`.
    IdleTimeout,
    /// No byte received for `read_idle_timeout`.
    ReadIdleTimeout,
    /// Bytes were waiting to be sent and none were acknowledged for `write_idle_timeout`
    /// (the peer stopped reading, or vanished).
    WriteIdleTimeout,
    /// The peer connected and never sent a byte within `first_byte_timeout`.
    FirstByteTimeout,
    /// The connection reached `max_connection_age`.
    MaxConnectionAge,
    /// TCP keepalive probes went unanswered: the peer is gone (half-open connection).
    KeepaliveFailed,
    /// Sent data stayed unacknowledged for `user_timeout` (`TCP_USER_TIMEOUT`).
    UserTimeout,
    /// The peer reset the connection (RST).
    ResetByPeer,
    /// The connection was ended by a graceful drain of the listener.
    Drained,
    /// Closed on request, through [`Controller::close`](crate::Controller::close).
    Requested,
    /// The peer owed data (a request head or body) and sent it slower than
    /// `min_receive_rate` for longer than its grace period (a slowloris client).
    SlowReceive,
    /// We had data queued and the peer took it slower than `min_send_rate` for longer
    /// than its grace period (a slow reader).
    SlowSend,
    /// The listener was at `max_connections` with clients waiting in the kernel's
    /// backlog, and a framework serve closed this connection, the oldest with no request
    /// in flight, to make room (a slowloris must not starve well-behaved clients).
    LoadShed,
    /// A [`Connector`](crate::Connector)'s connect did not complete within
    /// `connect_timeout` (a blackholed address, a `SYN` that goes unanswered). No
    /// connection came of it: it is counted here and in
    /// [`Stats::connect_errors`](crate::Stats::connect_errors), and the connect fails
    /// with `TimedOut`.
    ConnectTimeout,
    /// A client of a framework serve over TLS had not finished its TLS handshake within
    /// the serve's `tls_handshake_timeout`, counted from accept (a client that connects
    /// and stalls before or inside its `ClientHello`).
    TlsHandshakeTimeout,
}

impl CloseReason {
    /// All reasons, in declaration order.
    pub(crate) const ALL: [CloseReason; 17] = [
        CloseReason::CloseWaitTimeout,
        CloseReason::FinWaitTimeout,
        CloseReason::IdleTimeout,
        CloseReason::ReadIdleTimeout,
        CloseReason::WriteIdleTimeout,
        CloseReason::FirstByteTimeout,
        CloseReason::MaxConnectionAge,
        CloseReason::KeepaliveFailed,
        CloseReason::UserTimeout,
        CloseReason::ResetByPeer,
        CloseReason::Drained,
        CloseReason::Requested,
        CloseReason::SlowReceive,
        CloseReason::SlowSend,
        CloseReason::LoadShed,
        CloseReason::ConnectTimeout,
        CloseReason::TlsHandshakeTimeout,
    ];

    /// Every reason, in declaration order (more may come: the enum is
    /// `#[non_exhaustive]`).
    pub fn all() -> impl Iterator<Item = CloseReason> {
        Self::ALL.into_iter()
    }

    /// A short, stable, snake_case name (used in logs and JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::CloseWaitTimeout => "close_wait_timeout",
            CloseReason::FinWaitTimeout => "fin_wait_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ReadIdleTimeout => "read_idle_timeout",
            CloseReason::WriteIdleTimeout => "write_idle_timeout",
            CloseReason::FirstByteTimeout => "first_byte_timeout",
            CloseReason::MaxConnectionAge => "max_connection_age",
            CloseReason::KeepaliveFailed => "keepalive_failed",
            CloseReason::UserTimeout => "user_timeout",
            CloseReason::ResetByPeer => "reset_by_peer",
            CloseReason::Drained => "drained",
            CloseReason::Requested => "requested",
            CloseReason::SlowReceive => "slow_receive",
            CloseReason::SlowSend => "slow_send",
            CloseReason::LoadShed => "load_shed",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::TlsHandshakeTimeout => "tls_handshake_timeout",
        }
    }

    /// Why the kernel ended a connection, from the socket error (`errno`, taken from
    /// `SO_ERROR` or by the application's own read or write), its last `TCP_INFO`, the
    /// bytes the application wrote and whether our FIN went out; `None` for the normal
    /// end after both FINs.
    pub(crate) fn of_kernel_end(
        errno: Option<i32>,
        info: Option<TcpInfo>,
        written: u64,
        local_fin: bool,
    ) -> Option<Self> {
        // `SO_ERROR` is read-once: a handler blocked in read or write is woken by the same
        // kernel event and its syscall may take the error first (measured: a writer to a
        // vanished peer gets ETIMEDOUT itself, then SO_ERROR is 0). The retry counters
        // survive the close: `retransmits` > 0 after a retransmission timeout (user
        // timeout, `tcp_retries2`), `probes` > 0 after keepalive or zero-window probes;
        // a reset or a normal close leaves both at 0.
        let timed_out = match errno {
            // A reset: ECONNRESET, or EPIPE if it came in CLOSE_WAIT.
            Some(libc::ECONNRESET | libc::EPIPE) => false,
            // ETIMEDOUT, or the last ICMP error seen while retrying (EHOSTUNREACH, …),
            // which the kernel reports instead of ETIMEDOUT when it gives up.
            Some(_) => true,
            None => info.is_some_and(|i| i.retransmits > 0 || i.probes > 0),
        };
        // The peer acknowledged one byte more than we wrote: our FIN (measured: a normal
        // close in either order leaves `bytes_acked` = written + 1, a reset leaves it
        // at most `written`). Also covers a shutdown whose LOCAL_FIN flag is not set yet.
        let our_fin_acked = info.is_some_and(|i| i.bytes_acked > written);
        if errno.is_none() && !timed_out && (our_fin_acked || local_fin) {
            return None;
        }
        let outstanding = info.is_some_and(|i| written > i.bytes_acked);
        Some(match (timed_out, outstanding) {
            (true, true) => CloseReason::UserTimeout,
            (true, false) => CloseReason::KeepaliveFailed,
            (false, _) => CloseReason::ResetByPeer,
        })
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(CloseReason::from_index(i), Some(*reason));
        }
        for (i, state) in ConnectionState::ALL.iter().enumerate() {
            assert_eq!(state.index(), i);
        }
    }
}
