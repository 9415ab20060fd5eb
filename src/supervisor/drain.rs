//! Draining: half-close idle connections at the soft deadline, close the rest at the
//! hard one, and count how each ended.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::sync::oneshot;

use super::rules::Sample;
use super::Supervisor;
use crate::drain::DrainReport;
use crate::state::{flags, CloseReason};

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
    HalfClosed,
    Forced,
}

pub(super) struct Drain {
    pub(super) soft_at: Instant,
    pub(super) hard_at: Instant,
    pub(super) soft_done: bool,
    /// Activity (bytes both ways) of each connection when the drain started.
    pub(super) baseline: HashMap<u64, u64>,
    pub(super) report: DrainReport,
    pub(super) reply: oneshot::Sender<DrainReport>,
}

impl Supervisor {
    pub(super) fn start_drain(&mut self, request: DrainRequest) {
        let now = Instant::now();
        self.conns.retain(|_, e| e.conn.strong_count() > 0);
        let baseline = self
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let conn = e.conn.upgrade()?;
                let sample = Sample::take(&conn);
                Some((*id, sample.read.wrapping_add(sample.write)))
            })
            .collect();
        let report = DrainReport {
            connections: self.conns.len(),
            ..DrainReport::default()
        };
        tracing::info!(connections = report.connections, soft = ?request.soft, hard = ?request.hard, "draining");
        self.drain = Some(Drain {
            soft_at: now + request.soft,
            hard_at: now + request.hard.max(request.soft),
            soft_done: false,
            baseline,
            report,
            reply: request.reply,
        });
        if self.conns.is_empty() {
            self.finish_drain();
        }
    }

    /// Soft deadline: half-close the connections that moved no byte since the drain
    /// began. Hard deadline: close the rest and end their tasks.
    pub(super) fn drain_step(&mut self, now: Instant) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        if !drain.soft_done && now >= drain.soft_at {
            drain.soft_done = true;
            let baseline = std::mem::take(&mut drain.baseline);
            for (id, entry) in self.conns.iter_mut() {
                let Some(conn) = entry.conn.upgrade() else {
                    continue;
                };
                if conn.has(flags::CLOSED | flags::LOCAL_FIN) {
                    continue;
                }
                let sample = Sample::take(&conn);
                let idle = baseline.get(id) == Some(&sample.read.wrapping_add(sample.write))
                    && !sample.info.is_some_and(|i| i.has_pending_send());
                if idle {
                    let _ = conn
                        .socket
                        .with(|fd| SockRef::from(&fd).shutdown(std::net::Shutdown::Write));
                    conn.set_flag(flags::LOCAL_FIN);
                    entry.local_fin_at = Some(now);
                    entry.fate = Fate::HalfClosed;
                    if conn.has(flags::PEER_FIN) {
                        entry.retired = true;
                        entry.due = None;
                    }
                    tracing::info!(parent: &conn.span, "drain: idle at the soft deadline, half-closed");
                }
            }
        }
        let Some(drain) = self.drain.as_ref() else {
            return;
        };
        if now >= drain.hard_at {
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            let mut forced = 0;
            for id in ids {
                let Some(conn) = self.conns.get(&id).and_then(|e| e.conn.upgrade()) else {
                    continue;
                };
                let info = conn.tcp_info();
                self.close(&conn, CloseReason::Drained, info, false);
                conn.abort_task();
                if let Some(entry) = self.conns.get_mut(&id) {
                    entry.fate = Fate::Forced;
                }
                forced += 1;
            }
            if let Some(drain) = self.drain.as_mut() {
                drain.report.forced = forced;
            }
            self.finish_drain();
        }
    }

    pub(super) fn finish_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            tracing::info!(report = ?drain.report, "drain finished");
            let _ = drain.reply.send(drain.report);
        }
    }
}
