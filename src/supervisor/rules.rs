//! The rules: idle clocks, deadlines, and closing a connection from outside.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use socket2::SockRef;

use super::{Entry, Supervisor};
use crate::config::CloseMode;
use crate::conn::Conn;
use crate::idle::{IdleClock, Verdict};
use crate::state::{flags, CloseReason};
use crate::stats::TcpInfo;
use crate::sys;

/// The inactivity clocks of one connection.
#[derive(Default)]
pub(super) struct Clocks {
    pub(super) idle: Option<IdleClock>,
    pub(super) read_idle: Option<IdleClock>,
    pub(super) write_idle: Option<IdleClock>,
    pub(super) close_wait: Option<IdleClock>,
}

impl Clocks {
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        [self.idle, self.read_idle, self.write_idle, self.close_wait]
            .into_iter()
            .flatten()
            .map(|c| c.deadline())
    }
}

/// The activity counters as of now: the application's and, on Linux, the kernel's.
pub(super) struct Sample {
    pub(super) read: u64,
    pub(super) write: u64,
    pub(super) info: Option<TcpInfo>,
}

impl Sample {
    pub(super) fn take(conn: &Conn) -> Self {
        let info = conn.tcp_info();
        let (k_read, k_write) = info.map_or((0, 0), |i| (i.bytes_received, i.bytes_acked));
        Self {
            read: conn.bytes_read.load(Relaxed).wrapping_add(k_read),
            write: conn.bytes_written.load(Relaxed).wrapping_add(k_write),
            info,
        }
    }
}

impl Supervisor {
    /// The earliest instant any rule needs a look, as of the entry's clocks.
    pub(super) fn earliest(&self, entry: &Entry, accepted_at: Instant) -> Option<Instant> {
        let c = &self.config.inner;
        [
            c.max_connection_age.map(|t| accepted_at + t),
            c.first_byte_timeout
                .filter(|_| entry.first_byte_pending)
                .map(|t| accepted_at + t),
            c.fin_wait_timeout
                .zip(entry.local_fin_at)
                .map(|(t, at)| at + t),
        ]
        .into_iter()
        .flatten()
        .chain(entry.clocks.iter().flat_map(|c| c.deadlines()))
        .min()
    }

    pub(super) fn earliest_for(&self, id: u64, _now: Instant) -> Option<Instant> {
        let entry = self.conns.get(&id)?;
        let conn = entry.conn.upgrade()?;
        self.earliest(entry, conn.accepted_at)
    }

    /// Evaluates every rule of one connection: closes it if one expired, otherwise
    /// schedules the next look.
    pub(super) fn check(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.live(id) else { return };
        let sample = Sample::take(&conn);
        let c = self.config.inner.clone();
        let entry = self.conns.get_mut(&id).expect("live");
        let mut next: Option<Instant> = None;
        let mut expired: Option<CloseReason> = None;
        let mut merge = |verdict: Verdict, reason: CloseReason| match verdict {
            Verdict::Expired => {
                expired.get_or_insert(reason);
            }
            Verdict::CheckAt(at) => next = Some(next.map_or(at, |n: Instant| n.min(at))),
        };
        let at_or_expired = |at: Instant| {
            if now >= at {
                Verdict::Expired
            } else {
                Verdict::CheckAt(at)
            }
        };

        if let Some(t) = c.max_connection_age {
            merge(
                at_or_expired(conn.accepted_at + t),
                CloseReason::MaxConnectionAge,
            );
        }
        if let (Some(t), true) = (c.first_byte_timeout, entry.first_byte_pending) {
            if sample.read > 0 {
                entry.first_byte_pending = false;
            } else {
                merge(
                    at_or_expired(conn.accepted_at + t),
                    CloseReason::FirstByteTimeout,
                );
            }
        }
        let mut no_clocks = Clocks::default();
        let clocks = entry.clocks.as_deref_mut().unwrap_or(&mut no_clocks);
        if let Some(clock) = clocks.close_wait.as_mut() {
            merge(
                clock.check(sample.write, now),
                CloseReason::CloseWaitTimeout,
            );
        }
        if let (Some(t), Some(at)) = (c.fin_wait_timeout, entry.local_fin_at) {
            let peer_done = conn.has(flags::PEER_FIN)
                || sample.info.is_some_and(|i| i.state.peer_fin_received());
            if !peer_done {
                merge(at_or_expired(at + t), CloseReason::FinWaitTimeout);
            }
        }
        if let Some(clock) = clocks.write_idle.as_mut() {
            // Only a writer with bytes waiting can be stalled.
            let waiting = sample.info.is_none_or(|i| i.has_pending_send());
            let verdict = if waiting {
                clock.check(sample.write, now)
            } else {
                clock.hold(sample.write, now)
            };
            merge(verdict, CloseReason::WriteIdleTimeout);
        }
        if let Some(clock) = clocks.read_idle.as_mut() {
            merge(clock.check(sample.read, now), CloseReason::ReadIdleTimeout);
        }
        if let Some(clock) = clocks.idle.as_mut() {
            merge(
                clock.check(sample.read.wrapping_add(sample.write), now),
                CloseReason::IdleTimeout,
            );
        }

        match expired {
            Some(reason) => {
                let force_abort = matches!(
                    reason,
                    CloseReason::FinWaitTimeout | CloseReason::WriteIdleTimeout
                );
                self.close(&conn, reason, sample.info, force_abort);
            }
            None => self.schedule(id, next),
        }
    }

    pub(super) fn close(
        &mut self,
        conn: &Conn,
        reason: CloseReason,
        info: Option<TcpInfo>,
        force_abort: bool,
    ) {
        self.retire(conn.id);
        // Already over without us (both FINs exchanged behind the stream's back, or a
        // failure the watcher could not report): nothing to close, nothing to count.
        // `getpeername` fails with ENOTCONN once the kernel has closed the socket.
        let ended = conn
            .socket
            .with(|fd| SockRef::from(&fd).peer_addr().is_err())
            .unwrap_or(true);
        if ended {
            tracing::debug!(parent: &conn.span, reason = %reason, "deadline passed after the connection had ended");
            return;
        }
        if !conn.mark_closed(reason) {
            return;
        }
        // A FIN would queue behind unsent data and leave an orphan in FIN_WAIT_1.
        let pending = info.is_some_and(|i| i.has_pending_send());
        let abortive = force_abort || pending || self.config.close_mode() == CloseMode::Abortive;
        let result = conn.socket.with(|fd| {
            if abortive {
                sys::disconnect(fd)
            } else {
                SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
            }
        });
        let aborted_task = conn.abort_task();
        match result {
            Some(Err(e)) => {
                tracing::debug!(parent: &conn.span, reason = %reason, error = %e, "close failed (already closed?)");
            }
            _ => {
                tracing::info!(parent: &conn.span, reason = %reason, abortive, aborted_task, "closed by tcp-hygiene");
            }
        }
    }

    pub(super) fn peer_fin(&mut self, conn: &Conn, now: Instant) {
        conn.set_flag(flags::PEER_FIN);
        if conn.has(flags::LOCAL_FIN) {
            // Both directions are done: nothing left to enforce.
            self.retire(conn.id);
            return;
        }
        let Some(entry) = self.conns.get_mut(&conn.id) else {
            return;
        };
        if let Some(t) = self.config.close_wait_timeout() {
            let clocks = entry.clocks.get_or_insert_with(Box::default);
            if clocks.close_wait.is_none() {
                let sample = Sample::take(conn);
                clocks.close_wait = Some(IdleClock::new(t, sample.write, now));
            }
        }
        let due = self.earliest_for(conn.id, now);
        self.schedule(conn.id, due);
    }
}
