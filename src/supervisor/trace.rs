//! What the supervisor keeps only to tell: each connection's tracing span, and when each
//! `CLOSE_WAIT` began (for the metrics' `close_wait_seconds`).

use crate::conn::Conn;
use crate::rules::{Nanos, Sample};
use crate::shared::Shared;

use super::slot_map::SlotMap;

/// Each connection's span, made the first time it has something to say, and kept only if
/// a subscriber wants it: with none, a close costs no span and no map entry.
#[derive(Debug, Default)]
pub(super) struct Spans {
    spans: SlotMap<tracing::Span>,
}

impl Spans {
    /// The connection's span: its id and peer on every event about it.
    pub(super) fn of(&mut self, conn: &Conn) -> tracing::Span {
        if let Some(span) = self.spans.get(&conn.index()) {
            return span.clone();
        }
        let span = tracing::info_span!(parent: None, "tcp_hygiene::conn", id = %conn.id(), peer = %conn.peer());
        if !span.is_disabled() {
            self.spans.insert(conn.index(), span.clone());
        }
        span
    }

    pub(super) fn forget(&mut self, index: u32) {
        // Without a subscriber there are none: no hashing per close.
        if !self.spans.is_empty() {
            self.spans.remove(&index);
        }
    }
}

/// When the supervisor learned of each connection's `CLOSE_WAIT`, until our close ends
/// it; only with the `metrics` feature (nothing else reads it).
#[derive(Debug, Default)]
pub(super) struct CloseWaits {
    since: SlotMap<Nanos>,
}

impl CloseWaits {
    /// Notes the start of a `CLOSE_WAIT` that `sample` shows.
    pub(super) fn note(&mut self, index: u32, sample: &Sample, now: Nanos) {
        if cfg!(feature = "metrics") && sample.fins() == crate::rules::table::Fins::Peer {
            self.since.entry(index).or_insert(now);
        }
    }

    /// Our close (a FIN, a reset, a drop) ended the connection's `CLOSE_WAIT`, if it was
    /// in it: the metrics learn how long it sat there.
    pub(super) fn over(&mut self, index: u32, now: Nanos, shared: &Shared) {
        if self.since.is_empty() {
            return;
        }
        if let Some(since) = self.since.remove(&index) {
            let sat = std::time::Duration::from_nanos(now.saturating_sub(since));
            shared.counters.close_wait_ended(sat);
        }
    }
}
