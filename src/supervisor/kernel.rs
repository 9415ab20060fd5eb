//! What the kernel tells the supervisor: peer FINs, resets, keepalive and user timeouts
//! (and, for sockets without kernel events, the sweep that stands in for them).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::Supervisor;
use crate::conn::Conn;
use crate::state::{flags, CloseReason};
use crate::stats::{KernelState, TcpInfo};
use crate::sys::{self, FinEvent, Probe};

pub(super) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl Supervisor {
    pub(super) fn on_fin_event(&mut self, event: FinEvent, now: Instant) {
        let Some(conn) = self.live(event.id) else {
            return;
        };
        let info = conn.tcp_info();
        let kernel_closed = info.is_some_and(|i| i.state == KernelState::Close);
        if event.error || (event.hangup && kernel_closed) {
            self.kernel_ended(&conn, info, None);
        } else if info.is_none_or(|i| i.state.peer_fin_received()) {
            self.peer_fin(&conn, now);
        }
    }

    /// The kernel ended the connection: reset by the peer, keepalive or user timeout, or
    /// (no error) the normal end after both FINs. `taken` is a socket error the caller
    /// already took from the socket (a peek consumes it).
    pub(super) fn kernel_ended(&mut self, conn: &Conn, info: Option<TcpInfo>, taken: Option<i32>) {
        let errno = taken.or_else(|| {
            conn.socket
                .with(|fd| SockRef::from(&fd).take_error())
                .and_then(|r| r.ok().flatten())
                .and_then(|e| e.raw_os_error())
        });
        if let Some(errno) = errno {
            conn.set_kernel_error(errno);
        }
        // If the handler's own read or write took the error first, it recorded it. EPIPE
        // is left out: the application also gets it for writing after its own shutdown.
        let errno = errno.or_else(|| conn.app_error().filter(|e| *e != libc::EPIPE));
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
        let written = conn.bytes_written.load(Relaxed);
        // The peer acknowledged one byte more than we wrote: our FIN (measured: a normal
        // close in either order leaves `bytes_acked` = written + 1, a reset leaves it
        // at most `written`). Also covers a shutdown whose LOCAL_FIN flag is not set yet.
        let our_fin_acked = info.is_some_and(|i| i.bytes_acked > written);
        if errno.is_none() && !timed_out && (our_fin_acked || conn.has(flags::LOCAL_FIN)) {
            // No error: both FINs went through (TIME_WAIT took the socket over, or
            // LAST_ACK ended). The normal end of a connection, not a failure, and
            // nothing is left to enforce (no further kernel event will come).
            conn.set_flag(flags::PEER_FIN);
            self.retire(conn.id);
            return;
        }
        let outstanding = info.is_some_and(|i| written > i.bytes_acked);
        let reason = match (timed_out, outstanding) {
            (true, true) => CloseReason::UserTimeout,
            (true, false) => CloseReason::KeepaliveFailed,
            (false, _) => CloseReason::ResetByPeer,
        };
        self.retire(conn.id);
        if conn.mark_closed(reason) {
            let aborted_task = conn.abort_task();
            tracing::info!(parent: &conn.span, reason = %reason, errno, aborted_task, "connection failed in the kernel");
        }
    }

    /// Looks at the connections the kernel watcher does not cover (all of them on
    /// platforms without kernel FIN events) for a FIN or a failure.
    pub(super) fn sweep(&mut self, now: Instant) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, e)| !e.watched && !e.retired)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(conn) = self.live(id) else { continue };
            if conn.has(flags::PEER_FIN) {
                continue;
            }
            match conn.socket.with(sys::probe) {
                Some(Probe::PeerFin) => self.peer_fin(&conn, now),
                Some(Probe::Ended(errno)) => {
                    let info = conn.tcp_info();
                    self.kernel_ended(&conn, info, errno);
                }
                Some(Probe::Open) | None => {}
            }
        }
    }
}
