//! Draining: half-close the connections idle between requests from the soft deadline
//! on, close the rest at the hard one, and count how each ended.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::entry::{Bits, Fate};
use super::report::DrainReport;
use super::tx::DrainRequest;
use super::Supervisor;
use crate::conn::{Conn, Flags, PAGE};
use crate::idle::later;
use crate::state::CloseReason;
use crate::sys;

/// Between the soft and the hard deadline, connections that were busy are looked at
/// again this often: each is half-closed as soon as it waits for its next request.
const RECHECK: Duration = Duration::from_millis(20);

pub(super) struct Drain {
    soft_at: Instant,
    hard_at: Instant,
    soft_done: bool,
    /// When to look again at the connections that were busy, until the hard deadline.
    recheck_at: Option<Instant>,
    /// Whether the soft step half-closes idle connections (else the HTTP layer does).
    half_close: bool,
    /// Connections of the drain not counted yet.
    remaining: usize,
    report: DrainReport,
    reply: oneshot::Sender<DrainReport>,
    /// Drains asked for while this one runs: they get its report.
    also: Vec<oneshot::Sender<DrainReport>>,
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

    /// Counts a connection of the drain that ended; returns whether it was the last.
    pub(super) fn count_released(&mut self, fate: Fate) -> bool {
        match fate {
            Fate::Untouched => self.report.finished += 1,
            Fate::IdleClosed => self.report.idle_closed += 1,
            Fate::Forced => self.report.forced += 1,
        }
        self.remaining = self.remaining.saturating_sub(1);
        self.remaining == 0
    }
}

impl Supervisor {
    /// The slots of every live connection.
    fn live_indices(&self) -> Vec<u32> {
        let mut indices = Vec::new();
        for (p, entries) in self.entries.iter().enumerate() {
            for (i, entry) in entries.iter().enumerate() {
                if entry.bits.has(Bits::LIVE) {
                    indices.push((p * PAGE + i) as u32);
                }
            }
        }
        indices
    }

    pub(super) fn start_drain(&mut self, request: DrainRequest) {
        if let Some(drain) = self.drain.as_mut() {
            drain.also.push(request.reply);
            return;
        }
        let now = Instant::now();
        let indices = self.live_indices();
        for &index in &indices {
            let entry = self.entry_mut(index);
            entry.bits.set(Bits::IN_DRAIN);
            entry.bits.set_fate(Fate::Untouched);
        }
        let report = DrainReport {
            connections: indices.len(),
            ..DrainReport::default()
        };
        tracing::info!(connections = report.connections, soft = ?request.soft, hard = ?request.hard, "draining");
        self.drain = Some(Drain {
            soft_at: later(now, request.soft),
            hard_at: later(now, request.hard.max(request.soft)),
            soft_done: false,
            recheck_at: None,
            half_close: request.half_close,
            remaining: indices.len(),
            report,
            reply: request.reply,
            also: Vec::new(),
        });
        if indices.is_empty() {
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
        if !drain.half_close {
            return;
        }
        let mut busy = false;
        for index in self.live_indices() {
            let entry = self.entry(index);
            if !entry.bits.has(Bits::IN_DRAIN) || entry.bits.fate() != Fate::Untouched {
                continue;
            }
            let conn = self.conn(index);
            if conn.is_released() || conn.has(Flags::CLOSED | Flags::LOCAL_FIN) {
                continue;
            }
            if !idle_between_requests(&conn) {
                busy = true;
                continue;
            }
            // A FIN, the stream's read woken with EOF; the handler finishes by itself.
            if self.half_close(&conn, CloseReason::Drained, now) {
                self.entry_mut(index).bits.set_fate(Fate::IdleClosed);
                tracing::info!(parent: &self.span(&conn), "drain: idle between requests, half-closed");
            }
        }
        if let Some(drain) = self.drain.as_mut() {
            drain.recheck_at = busy.then(|| later(now, RECHECK));
        }
    }

    /// Every connection of the drain not counted yet is counted now: by its fate if its
    /// stream is already gone (its release may still be queued), as forced otherwise.
    fn drain_hard(&mut self, now: Instant) {
        for index in self.live_indices() {
            let entry = self.entry(index);
            if !entry.bits.has(Bits::IN_DRAIN) {
                continue;
            }
            let fate = entry.bits.fate();
            let conn = self.conn(index);
            let counted = if conn.is_released() {
                fate
            } else {
                self.close(&conn, CloseReason::Drained, now, false);
                self.abort_task(index);
                Fate::Forced
            };
            let entry = self.entry_mut(index);
            entry.bits.clear(Bits::IN_DRAIN);
            entry.bits.set_fate(counted);
            if let Some(drain) = self.drain.as_mut() {
                drain.count_released(counted);
            }
        }
        self.finish_drain();
    }

    pub(super) fn finish_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            tracing::info!(report = ?drain.report, "drain finished");
            let r = &drain.report;
            let fates = [r.connections, r.finished, r.idle_closed, r.forced];
            self.shared.counters.drained(fates);
            let _ = drain.reply.send(drain.report);
            for reply in drain.also {
                let _ = reply.send(drain.report);
            }
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
    conn.with_fd(|fd| sys::unread_bytes(fd).is_ok_and(|n| n == 0))
        .unwrap_or(false)
}
