//! What the library tells the world beyond `Stats`: a hook called at every connection
//! event (as Go's `http.Server.ConnState`), and, with the `metrics` feature, metrics
//! through the `metrics` facade (`serde` for the reports is with them, in `stats`). Both are fed off the hot path: at accept, at state
//! changes, in the supervisor, at release.

#[cfg(feature = "metrics")]
pub(crate) mod metrics;

use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::state::CloseReason;

/// Something that happened to a connection, for the hook set with
/// [`Builder::on_event`](crate::Builder::on_event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionEvent {
    /// The connection's id, as [`ConnectionHandle::id`](crate::ConnectionHandle::id).
    pub id: crate::ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Time since the connection was accepted (or connected).
    pub since_accept: Duration,
    /// What happened.
    pub kind: ConnectionEventKind,
}

/// What happened to a connection. `Accepted` (or `Connected`, for a
/// [`Connector`](crate::Connector)'s) comes first and `Released` last, each of the others
/// at most once in between, in the order they happened:
///
/// - a stuck handler's `CLOSE_WAIT`, reaped: `Accepted`, `PeerClosed`,
///   `Closed { CloseWaitTimeout }`, `LocalClosed`, `Released`;
/// - a peer that resets: `Accepted`, `Failed { ResetByPeer }`, `Released`;
/// - an application that drops its stream first: `Accepted`, `Released` (the drop is its
///   close; nothing is reported after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEventKind {
    /// Accepted and registered with the supervisor.
    Accepted,
    /// Connected by a [`Connector`](crate::Connector) and registered with its supervisor:
    /// a client connection's first event, where an accepted one has `Accepted`.
    Connected,
    /// The peer's FIN arrived (seen by the kernel watcher, or as EOF by the application).
    PeerClosed,
    /// Our FIN went out while the stream was held: the application shut down its write
    /// half, or the library closed the connection gracefully.
    LocalClosed,
    /// The kernel ended the connection: a reset by the peer, a keepalive failure, a user
    /// timeout.
    Failed {
        /// Which.
        reason: CloseReason,
    },
    /// The library closed the connection.
    Closed {
        /// Why.
        reason: CloseReason,
    },
    /// The application dropped the stream (or took the tokio stream back). The last
    /// event of a connection.
    Released,
}

/// The hook: see [`Builder::on_event`](crate::Builder::on_event).
#[derive(Clone)]
pub(crate) struct Hook {
    hook: Arc<dyn Fn(&ConnectionEvent) + Send + Sync>,
    /// A panic was reported already: later ones are logged at debug level only.
    panicked: Arc<AtomicBool>,
}

impl Hook {
    pub(crate) fn new(hook: impl Fn(&ConnectionEvent) + Send + Sync + 'static) -> Self {
        Self {
            hook: Arc::new(hook),
            panicked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Calls the hook; a panic in it is caught and logged, never let loose in the
    /// supervisor or an application's task.
    pub(crate) fn call(&self, event: &ConnectionEvent) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| (self.hook)(event))).is_err() {
            if self.panicked.swap(true, Relaxed) {
                tracing::debug!(?event, "the connection-event hook panicked again");
            } else {
                tracing::error!(?event, "the connection-event hook panicked; it keeps being called, the panic is caught");
            }
        }
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook(..)")
    }
}
