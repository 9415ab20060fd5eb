//! Counters, gauges by state, and per-connection snapshots.

mod drain;
#[cfg(feature = "serde")]
mod serde;

pub use drain::DrainReport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::state::{CloseReason, ConnectionState};
use crate::tcp_info::TcpInfo;

/// The listener-wide counters, updated off the hot path (accept, state changes, closes),
/// and with the `metrics` feature the listener's metrics, fed at the same places.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) open_by_state: [AtomicI64; ConnectionState::ALL.len()],
    pub(crate) closed_by_reason: [AtomicU64; CloseReason::ALL.len()],
    pub(crate) released: AtomicU64,
    pub(crate) socket_option_failures: AtomicU64,
    pub(crate) fin_watch_failures: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) accept_resource_errors: AtomicU64,
    pub(crate) accept_backoffs: AtomicU64,
    pub(crate) rejected_per_ip: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    /// Set if the supervisor task ended abnormally (a bug): `accept` then fails.
    pub(crate) supervisor_failed: AtomicBool,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::observe::metrics::Metrics>,
}

/// How an accept failed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    PerConnection,
    Resources,
    Fatal,
}

impl Counters {
    /// The counters of a listener whose metrics carry the label `listener`.
    pub(crate) fn new(listener: &str) -> Self {
        let _ = listener;
        Self {
            #[cfg(feature = "metrics")]
            metrics: Some(crate::observe::metrics::Metrics::new(listener)),
            ..Self::default()
        }
    }

    /// Runs `f` on the metrics, if the feature is on.
    #[cfg(feature = "metrics")]
    fn metrics(&self, f: impl FnOnce(&crate::observe::metrics::Metrics)) {
        if let Some(m) = &self.metrics {
            f(m);
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn accepted(&self) {
        Self::bump(&self.accepted);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.accepted());
    }

    pub(crate) fn accept_failed(&self, how: AcceptFailure) {
        Self::bump(&self.accept_errors);
        if how == AcceptFailure::Resources {
            Self::bump(&self.accept_resource_errors);
            Self::bump(&self.accept_backoffs);
        }
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.accept_error(how as usize));
    }

    /// A connector's connect succeeded.
    pub(crate) fn connected(&self) {
        Self::bump(&self.connected);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.connected());
    }

    /// A connector's connect failed; `timed_out`: at `connect_timeout` (also counted as
    /// a close for [`CloseReason::ConnectTimeout`]).
    pub(crate) fn connect_failed(&self, timed_out: bool) {
        Self::bump(&self.connect_errors);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.connect_error());
        if timed_out {
            self.closed(CloseReason::ConnectTimeout);
        }
    }

    /// A back-off pause after accept ran out of resources.
    pub(crate) fn backed_off(&self, pause: Duration) {
        let _ = pause;
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.backoff(pause));
    }

    /// A connection closed for `reason`.
    pub(crate) fn closed(&self, reason: CloseReason) {
        Self::bump(&self.closed_by_reason[reason.index()]);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.closed(reason));
    }

    pub(crate) fn enter_state(&self, state: ConnectionState) {
        self.open_by_state[state.index()].fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.state(state, 1.0));
    }

    pub(crate) fn leave_state(&self, state: ConnectionState) {
        self.open_by_state[state.index()].fetch_sub(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.state(state, -1.0));
    }

    /// A stream was released after `lived()` (asked only for the metrics: the clock
    /// costs a little at every close).
    pub(crate) fn released(&self, lived: impl FnOnce() -> Duration) {
        Self::bump(&self.released);
        let _ = &lived;
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.duration(lived()));
    }

    /// A connection the library did not close ended: the peer closed first, or the
    /// application did.
    pub(crate) fn ended(&self, peer_first: bool) {
        let _ = peer_first;
        #[cfg(feature = "metrics")]
        self.metrics(|m| {
            use crate::observe::metrics::Ending;
            m.ended(if peer_first {
                Ending::Peer
            } else {
                Ending::Application
            });
        });
    }

    /// A socket left `CLOSE_WAIT` (our close) this long after the peer's FIN was seen.
    pub(crate) fn close_wait_ended(&self, sat: Duration) {
        let _ = sat;
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.close_wait(sat));
    }

    /// The supervisor saw a peer's FIN this long after it arrived.
    pub(crate) fn fin_detected(&self, took: Duration) {
        let _ = took;
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.fin_detect(took));
    }

    /// A TLS handshake under a framework serve failed (not a timeout: the client sent
    /// something that is not a handshake, or one rustls refused, or left mid-way).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_handshake_failed(&self) {
        Self::bump(&self.tls_handshake_failures);
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.tls_handshake_failed());
    }

    /// A drain finished.
    /// `fates`: the drain report's connections, finished, idle-closed and forced.
    pub(crate) fn drained(&self, fates: [usize; 4]) {
        let _ = fates;
        #[cfg(feature = "metrics")]
        self.metrics(|m| m.drained(fates));
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let open_by_state =
            std::array::from_fn(|i| self.open_by_state[i].load(Relaxed).max(0) as u64);
        Stats {
            accepted: self.accepted.load(Relaxed),
            open: open_by_state.iter().sum(),
            open_by_state,
            closed_by_reason: std::array::from_fn(|i| self.closed_by_reason[i].load(Relaxed)),
            released: self.released.load(Relaxed),
            socket_option_failures: self.socket_option_failures.load(Relaxed),
            fin_watch_failures: self.fin_watch_failures.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            accept_resource_errors: self.accept_resource_errors.load(Relaxed),
            accept_backoffs: self.accept_backoffs.load(Relaxed),
            rejected_per_ip: self.rejected_per_ip.load(Relaxed),
            connected: self.connected.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
        }
    }
}

/// A snapshot of a listener's (or a connector's) counters, from
/// [`TcpListener::stats`](crate::TcpListener::stats) or
/// [`Connector::stats`](crate::Connector::stats). The `accept_` fields and
/// `rejected_per_ip` stay 0 for a connector; `connected` and `connect_errors` for a
/// listener.
/// With the `serde` feature it is `Serialize`: one object with these fields, and
/// `open_by_state` and `closed_by_reason` as maps from every state's and reason's name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted since the listener was created.
    pub accepted: u64,
    /// Connections whose stream the application still holds.
    pub open: u64,
    open_by_state: [u64; ConnectionState::ALL.len()],
    closed_by_reason: [u64; CloseReason::ALL.len()],
    /// Streams the application has dropped (or taken back with `into_inner`).
    pub released: u64,
    /// Socket options (keepalive, `TCP_USER_TIMEOUT`, nodelay, linger) that failed on an
    /// accepted socket. The connection continues without them.
    pub socket_option_failures: u64,
    /// Sockets that could not be registered with the kernel FIN watcher: their FINs and
    /// kernel failures go unseen by the supervisor (the application still sees them as
    /// EOF or errors); timeouts that do not need a FIN still apply.
    pub fin_watch_failures: u64,
    /// Failed `accept` calls of any kind (all were skipped or retried).
    pub accept_errors: u64,
    /// Failed `accept` calls for lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`).
    pub accept_resource_errors: u64,
    /// Back-off pauses taken after resource errors.
    pub accept_backoffs: u64,
    /// Connections closed at once because their peer IP was at
    /// `max_connections_per_ip`.
    pub rejected_per_ip: u64,
    /// Connections a [`Connector`](crate::Connector) made.
    pub connected: u64,
    /// Failed connects of a [`Connector`](crate::Connector), of any kind (refused,
    /// unreachable, resolution failed, timed out); those that timed out are also
    /// counted as [`CloseReason::ConnectTimeout`] in [`closed`](Self::closed).
    pub connect_errors: u64,
    /// TLS handshakes that failed under a framework serve with
    /// `Serve::tls` (the `tls` feature): garbage or a plain HTTP
    /// request on the TLS port, a handshake rustls refused, a client that left mid-way.
    /// Handshakes that time out are counted as closed for
    /// [`CloseReason::TlsHandshakeTimeout`] instead, and a client that resets mid-way as
    /// [`CloseReason::ResetByPeer`] (also here, if the handshake's read saw the reset
    /// before the library did). Always 0 without the `tls` feature.
    pub tls_handshake_failures: u64,
}

impl Stats {
    /// Connections currently in `state` (held by the application).
    pub fn open_in(&self, state: ConnectionState) -> u64 {
        self.open_by_state[state.index()]
    }

    /// Connections the library closed for `reason` (for
    /// [`CloseReason::ConnectTimeout`]: connects that timed out).
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed_by_reason[reason.index()]
    }

    /// Connections the library closed, for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed_by_reason.iter().sum()
    }
}

/// A point-in-time view of one connection, from
/// [`ConnectionHandle::snapshot`](crate::ConnectionHandle::snapshot).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionSnapshot {
    /// The connection's id, unique within its listener.
    pub id: crate::ConnectionId,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// Time since accept.
    pub age: Duration,
    /// The library's view of the state.
    pub state: ConnectionState,
    /// Why the library closed it, if it did.
    pub close_reason: Option<CloseReason>,
    /// Bytes the application has read.
    pub bytes_read: u64,
    /// Bytes the application has written.
    pub bytes_written: u64,
    /// The kernel's view; `None` where `TCP_INFO` is unavailable or the socket was
    /// released.
    pub tcp_info: Option<TcpInfo>,
}
