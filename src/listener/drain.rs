//! `TcpListener::drain`: stop accepting, and let the supervisor end every connection
//! by the deadlines.

use std::time::Duration;

use super::TcpListener;
use crate::stats::DrainReport;

impl TcpListener {
    /// Stops accepting and drains the connections, with deadlines, and resolves with a
    /// report by the hard deadline at the latest.
    ///
    /// 1. The listening socket is closed at once; every handler waiting on
    ///    [`ConnectionHandle::draining`](crate::ConnectionHandle::draining) is woken, so
    ///    it can finish its current work and close.
    /// 2. From `soft` after the call on, each connection is half-closed as soon as it is
    ///    idle between requests: the application waits in a read with nothing buffered,
    ///    its last action was a write after the last read that returned data, and
    ///    everything it wrote is acknowledged. The peer gets our FIN, the application's
    ///    read returns EOF. A handler still computing an answer (even with a read
    ///    pending, as hyper keeps one during every request) is not idle.
    /// 3. At `hard` after the call, every connection still open is closed gracefully
    ///    (reason [`CloseReason::Drained`](crate::CloseReason::Drained)) and its task
    ///    aborted if it was spawned by [`serve`](Self::serve).
    ///
    /// Nothing waits forever: the future resolves as soon as all connections have ended,
    /// and never later than `hard` (plus the supervisor's scheduling delay). A `hard`
    /// shorter than `soft` is treated as equal to it. Every connection open when the
    /// drain began is counted once: `connections == finished + idle_closed + forced`.
    pub async fn drain(self, soft: Duration, hard: Duration) -> DrainReport {
        let report = self.shared().start_drain(soft, hard, true);
        // Closes the listening socket.
        drop(self);
        // The supervisor holds the reply until done; it only goes away with the runtime.
        report.await.unwrap_or_default()
    }
}
