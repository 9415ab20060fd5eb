//! A running drain: its deadlines and report ([`Drain`], in the rules), who waits for
//! the report, and the I/O of its steps.

use std::time::Instant;

use tokio::sync::oneshot;

use super::Supervisor;
use crate::conn::{Conn, Flags};
use crate::mailbox::DrainRequest;
use crate::rules::{nanos, Drain, DrainStep, Fate};
use crate::state::CloseReason;
use crate::stats::DrainReport;
use crate::sys;

pub(super) struct Draining {
    pub(super) drain: Drain,
    /// Who waits for the report: the drain's caller, and drains asked for while it runs.
    replies: Vec<oneshot::Sender<DrainReport>>,
}

impl Supervisor {
    pub(super) fn start_drain(&mut self, request: DrainRequest, now: Instant) {
        if let Some(draining) = self.drain.as_mut() {
            draining.replies.push(request.reply);
            return;
        }
        let indices = self.slots.held_indices();
        for &index in &indices {
            self.slots.watch_mut(index).join_drain();
        }
        let now_ns = self.now_ns(now);
        let drain = Drain::new(
            now_ns,
            nanos(request.soft),
            nanos(request.hard),
            request.half_close,
            indices.len(),
        );
        tracing::info!(connections = indices.len(), soft = ?request.soft, hard = ?request.hard, "draining");
        self.drain = Some(Draining {
            drain,
            replies: vec![request.reply],
        });
        // Empty, unless an accept admitted a connection whose registration is still on
        // its way (it passed its is-draining check before the drain began): that one
        // joins the drain when it registers, so the drain runs its course instead. An
        // accept that admits one after this look sees the drain and closes it instead
        // (`Shared::admission_closed`).
        if indices.is_empty() && self.shared.open() == 0 {
            self.finish_drain();
        } else {
            self.drain_step(now);
        }
    }

    /// From the soft deadline: half-close each connection as soon as it is idle between
    /// requests. Hard deadline: close the rest and end their tasks.
    pub(super) fn drain_step(&mut self, now: Instant) {
        let now_ns = self.now_ns(now);
        let Some(draining) = self.drain.as_mut() else {
            return;
        };
        match draining.drain.step(now_ns) {
            DrainStep::Wait => {}
            DrainStep::Soft => {
                let busy = self.soft_pass(now);
                if let Some(draining) = self.drain.as_mut() {
                    draining.drain.soft_pass_done(busy, now_ns);
                }
            }
            DrainStep::Hard => self.drain_hard(now),
        }
    }

    /// Half-closes every connection of the drain idle between requests; returns whether
    /// some were busy.
    fn soft_pass(&mut self, now: Instant) -> bool {
        let mut busy = false;
        for index in self.slots.held_indices() {
            let watch = self.slots.watch(index);
            if !watch.in_drain() || watch.fate() != Fate::Untouched || watch.is_ended() {
                continue;
            }
            let conn = self.slots.conn(index);
            if conn.is_released() || conn.has(Flags::CLOSED | Flags::LOCAL_FIN) {
                continue;
            }
            if !idle_between_requests(&conn) {
                busy = true;
                continue;
            }
            // A FIN, the stream's read woken with EOF; the handler finishes by itself.
            if self.close(index, &conn, CloseReason::Drained, false, false, now) {
                self.slots.watch_mut(index).set_fate(Fate::IdleClosed);
                tracing::info!(parent: &self.spans.of(&conn), "drain: idle between requests, half-closed");
                self.look(index, now);
            }
        }
        busy
    }

    /// Every connection of the drain not counted yet is counted now: by its fate if its
    /// stream is already gone (its release may still be queued), as forced otherwise.
    fn drain_hard(&mut self, now: Instant) {
        for index in self.slots.held_indices() {
            if !self.slots.watch(index).in_drain() {
                continue;
            }
            let conn = self.slots.conn(index);
            if !conn.is_released() {
                self.slots.watch_mut(index).set_fate(Fate::Forced);
                if self.close(index, &conn, CloseReason::Drained, false, true, now) {
                    self.look(index, now);
                }
                // Closed earlier (or over): its task ends all the same.
                if self.slots.watch_mut(index).end_task() {
                    self.tasks.abort(index);
                }
            }
            let fate = self.slots.watch_mut(index).leave_drain();
            if let Some(fate) = fate {
                self.count_in_drain(fate);
            }
        }
        self.finish_drain();
    }

    /// Counts a connection of the drain that ended.
    pub(super) fn count_in_drain(&mut self, fate: Fate) {
        let done = match self.drain.as_mut() {
            Some(draining) => draining.drain.count(fate),
            None => false,
        };
        if done {
            self.finish_drain();
        }
    }

    fn finish_drain(&mut self) {
        if let Some(draining) = self.drain.take() {
            let report = draining.drain.report();
            tracing::info!(?report, "drain finished");
            let fates = [
                report.connections,
                report.finished,
                report.idle_closed,
                report.forced,
            ];
            self.shared.counters.drained(fates);
            for reply in draining.replies {
                let _ = reply.send(report);
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
