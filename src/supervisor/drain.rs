//! Draining: half-close the connections idle between requests from the soft deadline
//! on, close the rest at the hard one, and count how each ended.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::sync::oneshot;

use super::Supervisor;
use crate::conn::Conn;
use crate::drain::DrainReport;
use crate::idle::later;
use crate::state::{flags, CloseReason};
use crate::sys;

/// Between the soft and the hard deadline, connections that were busy are looked at
/// again this often: each is half-closed as soon as it waits for its next request.
const RECHECK: Duration = Duration::from_millis(20);

/// Asks the supervisor to drain every connection (see `TcpListener::drain`).
#[derive(Debug)]
pub(crate) struct DrainRequest {
    pub(crate) soft: Duration,
    pub(crate) hard: Duration,
    pub(crate) reply: oneshot::Sender<DrainReport>,
}

/// What a drain did to a connection; each connection is counted under its last fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Untouched,
    IdleClosed,
    Forced,
}

pub(super) struct Drain {
    soft_at: Instant,
    hard_at: Instant,
    soft_done: bool,
    /// When to look again at the connections that were busy, until the hard deadline.
    recheck_at: Option<Instant>,
    report: DrainReport,
    reply: oneshot::Sender<DrainReport>,
}

impl Drain {
    /// When the drain needs the supervisor next.
    pub(super) fn next_step(&self) -> Instant {
        match (self.soft_done, self.recheck_at) {
            (false, _) => self.soft_at,
            (true, Some(at)) => at.min(self.hard_at),
            (true, None) => self.hard_at,
        }
    }

    /// A connection of the drain ended (its stream was released) before the hard
    /// deadline.
    pub(super) fn count_released(&mut self, fate: Fate) {
        match fate {
            Fate::Untouched => self.report.finished += 1,
            Fate::IdleClosed => self.report.idle_closed += 1,
            Fate::Forced => self.report.forced += 1,
        }
    }
}

impl Supervisor {
    pub(super) fn start_drain(&mut self, request: DrainRequest) {
        let now = Instant::now();
        // Entries whose connection is gone entirely are not counted: their release is
        // queued and finds no entry.
        self.conns.retain(|_, e| e.conn.strong_count() > 0);
        let report = DrainReport {
            connections: self.conns.len(),
            ..DrainReport::default()
        };
        tracing::info!(connections = report.connections, soft = ?request.soft, hard = ?request.hard, "draining");
        self.drain = Some(Drain {
            soft_at: later(now, request.soft),
            hard_at: later(now, request.hard.max(request.soft)),
            soft_done: false,
            recheck_at: None,
            report,
            reply: request.reply,
        });
        if self.conns.is_empty() {
            self.finish_drain();
        } else {
            self.drain_step(now);
        }
    }

    /// From the soft deadline: half-close each connection as soon as it is idle between
    /// requests. Hard deadline: close the rest and end their tasks.
    pub(super) fn drain_step(&mut self, now: Instant) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        if now >= drain.hard_at {
            self.drain_hard(now);
            return;
        }
        if now < drain.soft_at {
            return;
        }
        drain.soft_done = true;
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, e)| e.fate == Fate::Untouched)
            .map(|(id, _)| *id)
            .collect();
        let mut busy = false;
        for id in ids {
            let Some(conn) = self.conns.get(&id).and_then(|e| e.conn.upgrade()) else {
                continue;
            };
            if conn.is_released() || conn.has(flags::CLOSED | flags::LOCAL_FIN) {
                continue;
            }
            if !idle_between_requests(&conn) {
                busy = true;
                continue;
            }
            // A FIN, the stream's read woken with EOF; the handler finishes by itself.
            if conn.mark_shut(CloseReason::Drained) {
                let _ = conn
                    .socket
                    .with(|fd| SockRef::from(&fd).shutdown(Shutdown::Write));
                conn.wake_reader();
                if let Some(entry) = self.conns.get_mut(&id) {
                    entry.fate = Fate::IdleClosed;
                    entry.closed_by_us = true;
                }
                self.local_fin(&conn, now);
                tracing::info!(parent: &conn.span, "drain: idle between requests, half-closed");
            }
        }
        if let Some(drain) = self.drain.as_mut() {
            drain.recheck_at = busy.then(|| later(now, RECHECK));
        }
    }

    /// Every connection still in the table is counted now: by its fate if its stream is
    /// already gone (its release may still be queued), as forced otherwise.
    fn drain_hard(&mut self, now: Instant) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(entry) = self.conns.get(&id) else {
                continue;
            };
            let fate = entry.fate;
            let conn = entry.conn.upgrade().filter(|c| !c.is_released());
            let counted = match conn {
                Some(conn) => {
                    self.close(&conn, CloseReason::Drained, now, false);
                    conn.abort_task();
                    if let Some(entry) = self.conns.get_mut(&id) {
                        entry.fate = Fate::Forced;
                    }
                    Fate::Forced
                }
                None => fate,
            };
            if let Some(drain) = self.drain.as_mut() {
                drain.count_released(counted);
            }
        }
        self.finish_drain();
    }

    pub(super) fn finish_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            tracing::info!(report = ?drain.report, "drain finished");
            let _ = drain.reply.send(drain.report);
        }
    }
}

/// Idle between requests: the application waits in a read, has nothing buffered to
/// read, and wrote after the last read that returned data; and nothing it wrote is
/// still unacknowledged. "Waits in a read" alone means nothing: hyper keeps a read
/// pending during every request, to notice a client that leaves.
fn idle_between_requests(conn: &Conn) -> bool {
    if !conn.waits_for_next_request() {
        return false;
    }
    if conn.tcp_info().is_some_and(|i| i.has_pending_send()) {
        return false;
    }
    conn.socket
        .with(|fd| sys::unread_bytes(fd).is_ok_and(|n| n == 0))
        .unwrap_or(false)
}
