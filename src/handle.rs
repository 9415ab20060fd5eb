//! The per-connection handle: the connection's state for code that does not own the
//! stream.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::idle::{IdleClock, Verdict};
use crate::state::{flags, CloseReason, ConnectionState};
use crate::stats::ConnectionSnapshot;

/// A cheap, clonable view of one connection, from [`TcpStream::handle`](crate::TcpStream::handle).
///
/// It does not keep the socket open: once the stream is dropped the handle reports
/// [`ConnectionState::Closed`] (or the last state seen) and its futures resolve.
#[derive(Clone)]
pub struct ConnectionHandle {
    conn: Arc<Conn>,
}

impl ConnectionHandle {
    pub(crate) fn new(conn: Arc<Conn>) -> Self {
        Self { conn }
    }

    /// The connection's id, unique within its listener.
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The connection's state as the library sees it.
    pub fn state(&self) -> ConnectionState {
        self.conn.state()
    }

    /// Whether the peer has sent FIN or the connection has ended: the client is gone (or
    /// will send nothing more), so a handler may stop work on its behalf.
    pub fn is_peer_closed(&self) -> bool {
        self.conn.has(flags::PEER_FIN | flags::CLOSED) || self.conn.is_released()
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
        let conn = self.conn.clone();
        PeerClosed {
            inner: Box::pin(async move {
                conn.wait_until(|f| {
                    f & (flags::PEER_FIN | flags::CLOSED) != 0 || conn.is_released()
                })
                .await
            }),
        }
    }

    /// Resolves when the listener starts draining ([`TcpListener::drain`](crate::TcpListener::drain)):
    /// the handler should finish its current work and close. Resolves at once if the
    /// drain has already begun.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe.
    pub fn draining(&self) -> Draining {
        let conn = self.conn.clone();
        Draining {
            inner: Box::pin(async move {
                let shared = &conn.shared;
                loop {
                    let notified = shared.drain_started.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if shared.draining.load(Relaxed) {
                        return;
                    }
                    notified.await;
                }
            }),
        }
    }

    /// Resolves once no byte has been received for `idle`: the building block of an
    /// application heartbeat (send a ping after read-idle, close if no reply arrives).
    ///
    /// Counts the bytes the application read and, on Linux, the bytes the kernel
    /// received. Resolves between `idle` and `idle × 1.125` after the last byte; never
    /// before. Uses one tokio timer while it is awaited and none otherwise.
    pub fn read_idle(&self, idle: Duration) -> ReadIdle {
        let conn = self.conn.clone();
        ReadIdle {
            inner: Box::pin(async move {
                let activity = || {
                    let kernel = conn.tcp_info().map_or(0, |i| i.bytes_received);
                    conn.bytes_read.load(Relaxed).wrapping_add(kernel)
                };
                let mut clock = IdleClock::new(idle, activity(), Instant::now());
                loop {
                    match clock.check(activity(), Instant::now()) {
                        Verdict::Expired => return,
                        Verdict::CheckAt(at) => tokio::time::sleep_until(at.into()).await,
                    }
                }
            }),
        }
    }

    /// A point-in-time view: state, age, bytes, and on Linux the kernel's `TCP_INFO`.
    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: self.conn.id,
            peer_addr: self.conn.peer,
            age: self.conn.accepted_at.elapsed(),
            state: self.state(),
            close_reason: self.close_reason(),
            bytes_read: self.conn.bytes_read.load(Relaxed),
            bytes_written: self.conn.bytes_written.load(Relaxed),
            tcp_info: self.conn.tcp_info(),
        }
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.conn.id)
            .field("peer", &self.conn.peer)
            .field("state", &self.state())
            .finish()
    }
}

macro_rules! boxed_future {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[must_use = "futures do nothing unless polled"]
        pub struct $name {
            inner: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
        }

        impl Future for $name {
            type Output = ();

            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.inner.as_mut().poll(cx)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

boxed_future! {
    /// Future of [`ConnectionHandle::peer_closed`].
    PeerClosed
}

boxed_future! {
    /// Future of [`ConnectionHandle::read_idle`].
    ReadIdle
}

boxed_future! {
    /// Future of [`ConnectionHandle::draining`].
    Draining
}
