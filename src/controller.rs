//! A handle on a listener's supervision that outlives its place in an accept loop.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CloseMode, Config};
use crate::conn::{Conn, ConnRef};
use crate::handle::ConnectionHandle;
use crate::id::ConnectionId;
use crate::shared::Shared;
use crate::state::CloseReason;
use crate::stats::DrainReport;
use crate::stats::{ConnectionSnapshot, Stats};

/// A handle on a listener's supervision, from [`TcpListener::controller`](crate::TcpListener::controller)
/// (or on a connector's, from [`Connector::controller`](crate::Connector::controller)).
///
/// Clonable, `Send + Sync`, and usable after the listener has moved into `axum::serve`,
/// a hyper accept loop or tonic: the listener's stats, its live connections, closing one,
/// and a drain with deadlines.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
///
/// let listener = tcp_hygiene::TcpListener::bind("127.0.0.1:3000").await?;
/// let controller = listener.controller();
/// tokio::spawn(async move {
///     tokio::signal::ctrl_c().await.ok();
///     let report = controller.drain(Duration::from_secs(5), Duration::from_secs(30)).await;
///     println!("{report:?}");
/// });
/// axum::serve(listener, axum::Router::new()).await
/// # }
/// ```
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

impl Controller {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A snapshot of the listener's counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The listener's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The connections whose streams are held right now, each as a handle. O(n) in the
    /// listener's connections, off the hot path.
    pub fn handles(&self) -> Vec<ConnectionHandle> {
        self.shared
            .table
            .held()
            .into_iter()
            .map(|(page, index)| ConnectionHandle::new(ConnRef::adopt(Conn::new(page, index))))
            .collect()
    }

    /// A snapshot of every connection whose stream is held right now: id, peer, state,
    /// age, bytes and (Linux) `TCP_INFO`, for an admin endpoint.
    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.handles()
            .iter()
            .map(ConnectionHandle::snapshot)
            .collect()
    }

    /// Closes the connection `id` (as [`ConnectionHandle::id`] reports it): gracefully
    /// (our FIN after every queued byte) or abortively (RST), with reason
    /// [`CloseReason::Requested`]; its task is ended if it was spawned through the
    /// library. Returns false if no such connection is open.
    pub fn close(&self, id: impl Into<ConnectionId>, mode: CloseMode) -> bool {
        let Some((page, index)) = self.shared.table.find(id.into()) else {
            return false;
        };
        let conn = ConnRef::adopt(Conn::new(page, index));
        self.shared
            .tx
            .close(conn.id(), mode, CloseReason::Requested);
        true
    }

    /// Stops accepting (the listening socket stops listening; the listener's `accept`
    /// waits forever from now on) and drains the connections as
    /// [`TcpListener::drain`](crate::TcpListener::drain) does, by the same deadlines.
    pub async fn drain(&self, soft: Duration, hard: Duration) -> DrainReport {
        let report = self.shared.start_drain(soft, hard, true);
        self.shared.stop_listening();
        report.await.unwrap_or_default()
    }
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("open", &self.shared.open())
            .finish_non_exhaustive()
    }
}
