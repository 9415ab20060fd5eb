//! What the kernel tells the supervisor: peer FINs, resets, keepalive and user timeouts
//! (and, for sockets without kernel events, the sweep that stands in for them).

use std::time::{Duration, Instant};

use socket2::SockRef;

use super::entry::Bits;
use super::Supervisor;
use crate::conn::{Conn, Flags};
use crate::state::CloseReason;
use crate::sys::{self, Probe};
use crate::tcp_info::{KernelState, TcpInfo};

pub(super) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl Supervisor {
    /// An event for the socket registered as `key`: a FIN (read hang-up), a hang-up of
    /// both directions, or an error.
    pub(super) fn on_socket_event(&mut self, key: u64, hangup: bool, error: bool, now: Instant) {
        let (index, gen) = (key as u32, (key >> 32) as u32);
        let Some(conn) = self.live(index).filter(|c| c.gen() == gen) else {
            return;
        };
        let info = conn.tcp_info();
        let kernel_closed = info.is_some_and(|i| i.state == KernelState::Close);
        if error || (hangup && kernel_closed) {
            self.kernel_ended(&conn, info, None);
        } else if info.is_none_or(|i| i.state.peer_fin_received()) {
            if let Some(info) = info.filter(|_| !conn.has(Flags::PEER_FIN)) {
                // The FIN's arrival is the peer's last acknowledgement (a FIN carries
                // one, and a peer that has closed sends nothing else unprompted).
                let took = Duration::from_millis(info.last_ack_recv_ms.into());
                self.shared.counters.fin_detected(took);
            }
            self.peer_fin(&conn, now);
        }
    }

    /// The kernel ended the connection: reset by the peer, keepalive or user timeout, or
    /// (no error) the normal end after both FINs. `taken` is a socket error the caller
    /// already took from the socket (a peek consumes it).
    pub(super) fn kernel_ended(&mut self, conn: &Conn, info: Option<TcpInfo>, taken: Option<i32>) {
        let errno = taken.or_else(|| {
            conn.with_fd(|fd| SockRef::from(&fd).take_error())
                .and_then(|r| r.ok().flatten())
                .and_then(|e| e.raw_os_error())
        });
        if let Some(errno) = errno {
            conn.set_kernel_errno(errno);
        }
        // If the handler's own read or write took the error first, it recorded it. EPIPE
        // is left out: the application also gets it for writing after its own shutdown.
        let errno = errno.or_else(|| conn.app_errno().filter(|e| *e != libc::EPIPE));
        let local_fin = conn.has(Flags::LOCAL_FIN);
        let Some(reason) = CloseReason::of_kernel_end(errno, info, conn.bytes_written(), local_fin)
        else {
            // No error: both FINs went through (TIME_WAIT took the socket over, or
            // LAST_ACK ended). The normal end of a connection, not a failure, and
            // nothing is left to enforce (no further kernel event will come).
            conn.set_flag(Flags::PEER_FIN);
            self.retire(conn.index());
            return;
        };
        self.retire(conn.index());
        self.close_wait_over(conn.index(), Instant::now());
        if conn.mark_closed(reason) {
            let aborted_task = self.abort_task(conn.index());
            tracing::info!(parent: &self.span(conn), reason = %reason, errno, aborted_task, "connection failed in the kernel");
        }
    }

    /// Looks at the connections the kernel watcher does not cover (all of them on
    /// platforms without kernel FIN events) for a FIN or a failure.
    pub(super) fn sweep(&mut self, now: Instant) {
        let mut indices = Vec::new();
        for (p, entries) in self.entries.iter().enumerate() {
            for (i, entry) in entries.iter().enumerate() {
                let swept = sys::NEEDS_SWEEP || entry.bits.has(Bits::UNWATCHED);
                if swept && entry.bits.has(Bits::LIVE) && !entry.bits.has(Bits::RETIRED) {
                    indices.push((p * crate::conn::PAGE + i) as u32);
                }
            }
        }
        for index in indices {
            let Some(conn) = self.live(index) else {
                continue;
            };
            if conn.has(Flags::PEER_FIN) {
                continue;
            }
            match conn.with_fd(sys::probe) {
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
