//! The rules: idle clocks, deadlines, and closing a connection from outside.

use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use socket2::SockRef;

use super::{Entry, Supervisor};
use crate::config::CloseMode;
use crate::conn::Conn;
use crate::idle::{later, IdleClock, Verdict};
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
    /// After our FIN: the peer's acknowledgements are the activity.
    pub(super) fin_wait: Option<IdleClock>,
}

impl Clocks {
    pub(super) fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        [
            self.idle,
            self.read_idle,
            self.write_idle,
            self.close_wait,
            self.fin_wait,
        ]
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
        let absolute = if entry.closed_by_us {
            [None, None]
        } else {
            [
                c.max_connection_age.map(|t| later(accepted_at, t)),
                c.first_byte_timeout
                    .filter(|_| entry.first_byte_pending)
                    .map(|t| later(accepted_at, t)),
            ]
        };
        absolute
            .into_iter()
            .flatten()
            .chain(entry.clocks.iter().flat_map(|c| c.deadlines()))
            .min()
    }

    /// Schedules the connection's next look from its rules as they stand.
    pub(super) fn reschedule(&mut self, conn: &Conn) {
        let due = self
            .conns
            .get(&conn.id)
            .and_then(|e| self.earliest(e, conn.accepted_at));
        self.schedule(conn.id, due);
    }

    /// Evaluates every rule of one connection: closes it if one expired, otherwise
    /// schedules the next look.
    pub(super) fn check(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.live(id) else { return };
        let sample = Sample::take(&conn);
        let peer_done =
            conn.has(flags::PEER_FIN) || sample.info.is_some_and(|i| i.state.peer_fin_received());
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

        // Once we have closed it ourselves, only the rules that bound our FIN's way out
        // still apply.
        let open = !entry.closed_by_us;
        if let (Some(t), true) = (c.max_connection_age, open) {
            merge(
                at_or_expired(later(conn.accepted_at, t)),
                CloseReason::MaxConnectionAge,
            );
        }
        if let (Some(t), true, true) = (c.first_byte_timeout, entry.first_byte_pending, open) {
            if sample.read > 0 {
                entry.first_byte_pending = false;
            } else {
                merge(
                    at_or_expired(later(conn.accepted_at, t)),
                    CloseReason::FirstByteTimeout,
                );
            }
        }
        let mut no_clocks = Clocks::default();
        let clocks = entry.clocks.as_deref_mut().unwrap_or(&mut no_clocks);
        if let (Some(clock), true) = (clocks.close_wait.as_mut(), open) {
            merge(
                clock.check(sample.write, now),
                CloseReason::CloseWaitTimeout,
            );
        }
        if let Some(clock) = clocks.fin_wait.as_mut() {
            if !peer_done {
                merge(clock.check(sample.write, now), CloseReason::FinWaitTimeout);
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
        if let (Some(clock), true) = (clocks.read_idle.as_mut(), open) {
            merge(clock.check(sample.read, now), CloseReason::ReadIdleTimeout);
        }
        if let (Some(clock), true) = (clocks.idle.as_mut(), open) {
            merge(
                clock.check(sample.read.wrapping_add(sample.write), now),
                CloseReason::IdleTimeout,
            );
        }

        match expired {
            Some(reason) => {
                // RST only where the peer has stopped taking data (it leaves our data
                // unacknowledged, or never answers our FIN); everything else is a FIN
                // after every queued byte.
                let abortive = matches!(
                    reason,
                    CloseReason::FinWaitTimeout | CloseReason::WriteIdleTimeout
                );
                self.close(&conn, reason, now, abortive);
            }
            None => self.schedule(id, next),
        }
    }

    /// Closes a connection from outside and ends its task, if it was spawned through the
    /// library.
    ///
    /// Graceful: `shutdown(Write)`, so the peer gets our FIN after every byte already
    /// queued, and no reset if it sends more meanwhile (`shutdown(Both)` would make Linux
    /// reset the connection at its next byte and drop the queue). The stream's reads end
    /// at EOF, a parked one woken; its writes fail. `fin_wait_timeout` and
    /// `write_idle_timeout` keep bounding the socket until the peer answers.
    ///
    /// Abortive (`abortive`, or [`CloseMode::Abortive`]): a reset that leaves the
    /// descriptor open. Also the last step of a graceful close whose peer never answered
    /// (the connection keeps its first reason).
    pub(super) fn close(&mut self, conn: &Conn, reason: CloseReason, now: Instant, abortive: bool) {
        // Already over without us (both FINs exchanged behind the stream's back, or a
        // failure the watcher could not report): nothing to close, nothing to count.
        // `getpeername` fails with ENOTCONN once the kernel has closed the socket.
        let ended = conn
            .socket
            .with(|fd| SockRef::from(&fd).peer_addr().is_err())
            .unwrap_or(true);
        if ended {
            self.retire(conn.id);
            tracing::debug!(parent: &conn.span, reason = %reason, "deadline passed after the connection had ended");
            return;
        }
        let abortive = abortive || self.config.close_mode() == CloseMode::Abortive;
        let result = if abortive {
            self.retire(conn.id);
            let first = conn.mark_closed(reason);
            let result = conn.socket.with(sys::disconnect);
            if !first {
                tracing::info!(parent: &conn.span, reason = %reason, "reset after our FIN went unanswered");
                return;
            }
            result
        } else {
            if !conn.mark_shut(reason) {
                return;
            }
            let result = conn
                .socket
                .with(|fd| SockRef::from(&fd).shutdown(Shutdown::Write));
            conn.wake_reader();
            if let Some(entry) = self.conns.get_mut(&conn.id) {
                entry.closed_by_us = true;
            }
            self.local_fin(conn, now);
            result
        };
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

    /// Our FIN is out (the application shut down its write half, or the library did):
    /// the fin-wait rule starts, unless the peer's FIN came first.
    pub(super) fn local_fin(&mut self, conn: &Conn, now: Instant) {
        conn.set_flag(flags::LOCAL_FIN);
        if conn.has(flags::PEER_FIN) {
            // Both directions are done: nothing left to enforce.
            self.retire(conn.id);
            return;
        }
        if let Some(t) = self.config.fin_wait_timeout() {
            if let Some(entry) = self.conns.get_mut(&conn.id) {
                let clocks = entry.clocks.get_or_insert_with(Box::default);
                if clocks.fin_wait.is_none() {
                    clocks.fin_wait = Some(IdleClock::new(t, Sample::take(conn).write, now));
                }
            }
        }
        self.reschedule(conn);
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
        self.reschedule(conn);
    }
}
