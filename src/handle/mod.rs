//! The per-connection handle: the connection's state for code that does not own the
//! stream.

mod future;

pub use future::{Draining, PeerClosed, ReadIdle};

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::conn::ConnRef;
use crate::id::ConnectionId;
use crate::state::{CloseReason, ConnectionState};
use crate::stats::ConnectionSnapshot;

/// A cheap, clonable view of one connection, from [`TcpStream::handle`](crate::TcpStream::handle).
///
/// It does not keep the socket open: once the stream is dropped the handle reports the
/// last state seen (and why the library closed it, if it did), and its futures resolve.
#[derive(Clone)]
pub struct ConnectionHandle {
    conn: ConnRef,
}

impl ConnectionHandle {
    pub(crate) fn new(conn: ConnRef) -> Self {
        Self { conn }
    }

    /// The connection's id, unique within its listener (or connector).
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// The peer's address, as `accept` returned it or `connect` reached it, IPv6 flow
    /// information and scope id included.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer()
    }

    /// The connection's state as the library sees it.
    pub fn state(&self) -> ConnectionState {
        self.conn.state()
    }

    /// Whether the peer has sent FIN or the connection has ended: the client is gone (or
    /// will send nothing more), so a handler may stop work on its behalf.
    pub fn is_peer_closed(&self) -> bool {
        self.conn.flags().peer_gone()
    }

    /// Why the library closed this connection, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.conn.close_reason()
    }

    /// Resolves when the peer has sent FIN, the connection has ended, or the stream was
    /// dropped. The FIN is seen by the kernel watcher (Linux: within tens of
    /// microseconds; elsewhere within the 100 ms sweep), not by reads, so this works while
    /// the handler is busy elsewhere.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: dropping it loses nothing; a new one resolves at once if the peer
    /// has already closed.
    pub fn peer_closed(&self) -> PeerClosed {
        PeerClosed::new(self.conn.clone(), |conn| conn.flags().peer_gone())
    }

    /// Resolves when the listener starts draining ([`TcpListener::drain`](crate::TcpListener::drain)):
    /// the handler should finish its current work and close. Resolves at once if the
    /// drain has already begun.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe.
    pub fn draining(&self) -> Draining {
        Draining::new(self.conn.shared().drain.clone())
    }

    /// Resolves once no data has been received for `idle`: the building block of an
    /// application heartbeat (send a ping after read-idle, close if no reply arrives).
    ///
    /// On Linux it asks the kernel when data last arrived (`TCP_INFO`) and sleeps until
    /// exactly `idle` after it: one timer while it is awaited, none otherwise. Elsewhere
    /// it counts the bytes the application reads, and resolves between `idle` and
    /// `idle × 1.125` after the last one. Never before.
    pub fn read_idle(&self, idle: Duration) -> ReadIdle {
        ReadIdle::new(self.conn.clone(), idle)
    }

    /// Our local address of the connection, while its stream is held (`getsockname`).
    #[cfg(feature = "tonic")]
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.conn
            .with_fd(|fd| socket2::SockRef::from(&fd).local_addr())
            .and_then(Result::ok)
            .and_then(|a| a.as_socket())
    }

    #[cfg(feature = "hyper")]
    pub(crate) fn accepted_at(&self) -> Instant {
        self.conn.accepted_at()
    }

    /// A framework serve's word on the request in flight (see `min_receive_rate`).
    #[cfg(feature = "hyper")]
    pub(crate) fn set_received(&self, received: bool) {
        self.conn.set_received(received);
    }

    /// A framework serve's word on its response data: some waits for the peer to make
    /// room for it, or none.
    #[cfg(feature = "hyper")]
    pub(crate) fn set_user_queued(&self, queued: bool) {
        self.conn.set_user_queued(queued);
    }

    /// A framework serve's word on a request body: a handler waits for more of it.
    #[cfg(feature = "hyper")]
    pub(crate) fn set_owed(&self, owed: bool) {
        self.conn.set_owed(owed);
    }

    /// Bytes the application has written.
    #[cfg(feature = "hyper")]
    pub(crate) fn bytes_written(&self) -> u64 {
        self.conn.bytes_written()
    }

    /// The kernel's view, while the stream is held (Linux).
    #[cfg(feature = "hyper")]
    pub(crate) fn tcp_info(&self) -> Option<crate::TcpInfo> {
        self.conn.tcp_info()
    }

    /// Resolves when the library wants the connection closed (a rule expired on a
    /// connection whose serve closes it itself, see [`owner_closes`](Self::owner_closes)),
    /// or it ended otherwise.
    #[cfg(feature = "tls")]
    pub(crate) fn close_asked(&self) -> PeerClosed {
        PeerClosed::new(self.conn.clone(), Self::asked)
    }

    /// Whether the library wants the connection closed, or it ended otherwise (see
    /// [`close_asked`](Self::close_asked)): two atomic loads, for a connection's task
    /// that checks at every poll. The library also wakes a read parked in the stream when
    /// it asks, so a task waiting in a read is polled then.
    #[cfg(feature = "tls")]
    pub(crate) fn is_close_asked(&self) -> bool {
        Self::asked(&self.conn)
    }

    #[cfg(feature = "tls")]
    fn asked(conn: &crate::conn::Conn) -> bool {
        conn.close_reason().is_some()
            || conn
                .flags()
                .intersects(crate::conn::Flags::CLOSED | crate::conn::Flags::RELEASED)
    }

    /// From now on the serve closes the connection itself when the library would (over
    /// TLS, so that `close_notify` goes before our FIN); the library closes it at the TCP
    /// level only if it has not within a short grace.
    #[cfg(feature = "tls")]
    pub(crate) fn owner_closes(&self) {
        self.conn.shared().tx.owner_closes(self.conn.id());
    }

    /// Asks the supervisor to close the connection.
    #[cfg(feature = "hyper")]
    pub(crate) fn close(&self, mode: crate::CloseMode, reason: CloseReason) {
        self.conn.shared().tx.close(self.conn.id(), mode, reason);
    }

    /// Idle between requests as far as the stream can tell (see the drain).
    #[cfg(feature = "hyper")]
    pub(crate) fn waits_for_next_request(&self) -> bool {
        self.conn.waits_for_next_request()
    }

    /// A point-in-time view: state, age, bytes, and on Linux the kernel's `TCP_INFO`.
    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: self.conn.id(),
            peer_addr: self.conn.peer(),
            age: Instant::now().saturating_duration_since(self.conn.accepted_at()),
            state: self.state(),
            close_reason: self.close_reason(),
            bytes_read: self.conn.bytes_read(),
            bytes_written: self.conn.bytes_written(),
            tcp_info: self.conn.tcp_info(),
        }
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.conn.id())
            .field("peer", &self.conn.peer())
            .field("state", &self.state())
            .finish()
    }
}
