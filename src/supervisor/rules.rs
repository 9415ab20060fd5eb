//! The rules: idle clocks, deadlines, and closing a connection from outside.

use std::net::Shutdown;
use std::time::Instant;

use socket2::SockRef;

use super::entry::{Bits, Clocks};
use super::Supervisor;
use crate::config::CloseMode;
use crate::conn::{Conn, Flags};
use crate::idle::{later, IdleClock, RateWindow, Verdict};
use crate::state::CloseReason;
use crate::sys;
use crate::tcp_info::TcpInfo;

/// The activity counters as of now: the application's and, on Linux, the kernel's.
struct Sample {
    read: u64,
    write: u64,
    info: Option<TcpInfo>,
}

impl Sample {
    /// Bytes received from the peer: the kernel's count, or the application's reads
    /// where there is none.
    fn received(&self, conn: &Conn) -> u64 {
        self.info
            .map_or_else(|| conn.bytes_read(), |i| i.bytes_received)
    }

    fn take(conn: &Conn) -> Self {
        let info = conn.tcp_info();
        let (k_read, k_write) = info.map_or((0, 0), |i| (i.bytes_received, i.bytes_acked));
        Self {
            read: conn.bytes_read().wrapping_add(k_read),
            write: conn.bytes_written().wrapping_add(k_write),
            info,
        }
    }
}

impl Supervisor {
    /// Schedules the connection's next look from its rules as they stand.
    pub(super) fn reschedule(&mut self, conn: &Conn) {
        let config = &self.shared.config;
        let accepted = conn.accepted_at();
        let entry = self.entry(conn.index());
        let absolute = if entry.bits.has(Bits::CLOSED_BY_US) {
            [None, None]
        } else {
            [
                self.shared.max_age_deadline(accepted),
                config
                    .first_byte_timeout()
                    .filter(|_| entry.bits.has(Bits::FIRST_BYTE_PENDING))
                    .map(|t| later(accepted, t)),
            ]
        };
        let due = absolute
            .into_iter()
            .flatten()
            .chain(entry.clocks.iter().flat_map(|c| c.deadlines(config)))
            .min();
        self.schedule(conn.index(), due);
    }

    /// Evaluates every rule of one connection: closes it if one expired, otherwise
    /// schedules the next look.
    pub(super) fn check(&mut self, index: u32, now: Instant) {
        let Some(conn) = self.live(index) else { return };
        let sample = Sample::take(&conn);
        let peer_done =
            conn.has(Flags::PEER_FIN) || sample.info.is_some_and(|i| i.state.peer_fin_received());
        let config = self.shared.config.clone();
        let accepted = conn.accepted_at();
        let max_age = self.shared.max_age_deadline(accepted);
        let entry = self.entry_mut(index);
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
        // With the kernel's timestamps a look knows exactly when the wire was last used;
        // without, only whether a counter moved.
        let look =
            |clock: &mut IdleClock, count: u64, quiet: fn(&TcpInfo) -> std::time::Duration| {
                match sample.info.as_ref() {
                    Some(info) => clock.check_quiet_for(quiet(info), now),
                    None => clock.check(count, now),
                }
            };

        // Once we have closed it ourselves, only the rules that bound our FIN's way out
        // still apply.
        let open = !entry.bits.has(Bits::CLOSED_BY_US);
        if let (Some(at), true) = (max_age, open) {
            merge(at_or_expired(at), CloseReason::MaxConnectionAge);
        }
        if let (Some(t), true) = (config.first_byte_timeout(), open) {
            if entry.bits.has(Bits::FIRST_BYTE_PENDING) {
                if sample.read > 0 {
                    entry.bits.clear(Bits::FIRST_BYTE_PENDING);
                } else {
                    merge(
                        at_or_expired(later(accepted, t)),
                        CloseReason::FirstByteTimeout,
                    );
                }
            }
        }
        let mut no_clocks = Clocks::default();
        let clocks = entry.clocks.as_deref_mut().unwrap_or(&mut no_clocks);
        // Counted, not timed: a CLOSE_WAIT clock lives only from the peer's FIN to our
        // close, so its looks cost little, and the counter (our writes and the peer's
        // acknowledgements) keeps the reap within `timeout / 8` of the deadline.
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
        // Only a writer with bytes waiting can be stalled or slow. With nothing queued,
        // stop looking until the next write (where the kernel can say what is queued).
        let waiting = sample.info.is_none_or(|i| i.has_pending_send());
        let watching = clocks.write_idle.is_some() || clocks.send_rate.is_some();
        let stop_watching = watching && !waiting && sys::HAS_TCP_INFO;
        if stop_watching {
            clocks.write_idle = None;
            clocks.send_rate = None;
        }
        if let Some(clock) = clocks.write_idle.as_mut() {
            let verdict = if waiting {
                clock.check(sample.write, now)
            } else {
                clock.hold(sample.write, now)
            };
            merge(verdict, CloseReason::WriteIdleTimeout);
        }
        if let (Some(window), Some(rate), Some(info)) = (
            clocks.send_rate.as_mut(),
            config.min_send_rate(),
            sample.info,
        ) {
            merge(
                window.check(info.bytes_acked, &rate, now),
                CloseReason::SlowSend,
            );
        }
        // Only a peer that owes us data can be slow to send it; between requests, stop
        // looking until it owes again (the stream says when).
        let owes = open && conn.owes_data();
        let stop_receiving = clocks.receive_rate.is_some() && !owes;
        if stop_receiving {
            clocks.receive_rate = None;
        }
        if let (Some(window), Some(rate)) =
            (clocks.receive_rate.as_mut(), config.min_receive_rate())
        {
            merge(
                window.check(sample.received(&conn), &rate, now),
                CloseReason::SlowReceive,
            );
        }
        if let (Some(clock), true) = (clocks.read_idle.as_mut(), open) {
            merge(
                look(clock, sample.read, TcpInfo::since_data_received),
                CloseReason::ReadIdleTimeout,
            );
        }
        if let (Some(clock), true) = (clocks.idle.as_mut(), open) {
            merge(
                look(clock, sample.read.wrapping_add(sample.write), |i| {
                    i.since_data_received().min(i.since_data_sent())
                }),
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
                    CloseReason::FinWaitTimeout
                        | CloseReason::WriteIdleTimeout
                        | CloseReason::SlowSend
                );
                self.close(&conn, reason, now, abortive);
            }
            None => {
                self.schedule(index, next);
                // Asked before looking again, so that a change in between is not missed.
                if stop_watching {
                    conn.watch_writes();
                    if conn.tcp_info().is_some_and(|i| i.has_pending_send()) {
                        self.wrote(&conn, now);
                    }
                }
                if stop_receiving {
                    conn.watch_reads();
                    if conn.owes_data() {
                        self.receiving(&conn, now);
                    }
                }
            }
        }
    }

    /// The peer started owing data on a connection whose `min_receive_rate` window was
    /// stopped: it is judged again until it owes nothing.
    pub(super) fn receiving(&mut self, conn: &Conn, now: Instant) {
        if self.shared.config.min_receive_rate().is_none() {
            return;
        }
        let received = Sample::take(conn).received(conn);
        let clocks = self
            .entry_mut(conn.index())
            .clocks
            .get_or_insert_with(Box::default);
        if clocks.receive_rate.is_none() {
            clocks.receive_rate = Some(RateWindow::new(received, now));
            self.reschedule(conn);
        }
    }

    /// The application wrote to a connection whose write clocks were stopped (nothing was
    /// queued): `write_idle_timeout` and `min_send_rate` run again until the data is
    /// acknowledged.
    pub(super) fn wrote(&mut self, conn: &Conn, now: Instant) {
        let config = self.shared.config.clone();
        if !config.watches_writes() {
            return;
        }
        let sample = Sample::take(conn);
        let clocks = self
            .entry_mut(conn.index())
            .clocks
            .get_or_insert_with(Box::default);
        let mut started = false;
        if let (Some(t), None) = (config.write_idle_timeout(), clocks.write_idle) {
            clocks.write_idle = Some(IdleClock::new(t, sample.write, now));
            started = true;
        }
        if let (Some(_), None, Some(info)) = (config.min_send_rate(), clocks.send_rate, sample.info)
        {
            clocks.send_rate = Some(RateWindow::new(info.bytes_acked, now));
            started = true;
        }
        if started {
            self.reschedule(conn);
        }
    }

    /// Closes a connection from outside and ends its task, if it was spawned through the
    /// library.
    ///
    /// Graceful: `shutdown(Write)`, so the peer gets our FIN after every byte already
    /// queued, and no reset if it sends more meanwhile (`shutdown(Both)` would make Linux
    /// reset the connection at its next byte and drop the queue). The stream's reads end
    /// at EOF, a parked one woken; its writes fail. `fin_wait_timeout` (and
    /// `write_idle_timeout`) keep bounding the socket until the peer answers; the task is
    /// ended at once, and if it leaves data queued, the lingering close delivers it.
    ///
    /// Abortive (`abortive`, or [`CloseMode::Abortive`]): a reset that leaves the
    /// descriptor open. Also the last step of a graceful close whose peer never answered
    /// (the connection keeps its first reason).
    pub(super) fn close(&mut self, conn: &Conn, reason: CloseReason, now: Instant, abortive: bool) {
        // Already over without us (both FINs exchanged behind the stream's back, or a
        // failure the watcher could not report): nothing to close, nothing to count.
        // `getpeername` fails with ENOTCONN once the kernel has closed the socket.
        let ended = conn
            .with_fd(|fd| SockRef::from(&fd).peer_addr().is_err())
            .unwrap_or(true);
        let span = self.span(conn);
        if ended {
            self.retire(conn.index());
            tracing::debug!(parent: &span, reason = %reason, "deadline passed after the connection had ended");
            return;
        }
        let abortive = abortive || self.shared.config.close_mode() == CloseMode::Abortive;
        let result = if abortive {
            self.retire(conn.index());
            let first = conn.mark_closed(reason);
            let result = conn.with_fd(sys::disconnect);
            if !first {
                tracing::info!(parent: &span, reason = %reason, "reset after our FIN went unanswered");
                return;
            }
            result
        } else {
            if !conn.mark_shut(reason) {
                return;
            }
            let result = conn.with_fd(|fd| SockRef::from(&fd).shutdown(Shutdown::Write));
            self.after_our_close(conn, now);
            result
        };
        let aborted_task = self.abort_task(conn.index());
        match result {
            Some(Err(e)) => {
                tracing::debug!(parent: &span, reason = %reason, error = %e, "close failed (already closed?)");
            }
            _ => {
                tracing::info!(parent: &span, reason = %reason, abortive, aborted_task, "closed by tcp-hygiene");
            }
        }
    }

    /// Closes gracefully without ending the task: our FIN after every queued byte, the
    /// stream's read woken with EOF. Returns false if it was closed already.
    pub(super) fn half_close(&mut self, conn: &Conn, reason: CloseReason, now: Instant) -> bool {
        if !conn.mark_shut(reason) {
            return false;
        }
        let _ = conn.with_fd(|fd| SockRef::from(&fd).shutdown(Shutdown::Write));
        self.after_our_close(conn, now);
        true
    }

    /// After our graceful close: the stream's parked read ends, and only the rules that
    /// bound our FIN's way out still apply.
    fn after_our_close(&mut self, conn: &Conn, now: Instant) {
        conn.wake_reader();
        self.entry_mut(conn.index()).bits.set(Bits::CLOSED_BY_US);
        self.local_fin(conn, now);
    }

    /// A close someone asked for (the controller, a framework serve): gracefully or
    /// abortively as asked. During a drain, a graceful `Drained` close before the hard
    /// deadline counts as idle-closed (the HTTP layer closes what has no request in
    /// flight); other closes keep the connection's fate.
    pub(super) fn close_on_request(
        &mut self,
        conn: &Conn,
        mode: CloseMode,
        reason: CloseReason,
        now: Instant,
    ) {
        let draining = self.drain.is_some() && self.entry(conn.index()).bits.has(Bits::IN_DRAIN);
        if draining && reason == CloseReason::Drained && mode == CloseMode::Graceful {
            self.entry_mut(conn.index())
                .bits
                .set_fate(super::entry::Fate::IdleClosed);
        }
        self.close(conn, reason, now, mode == CloseMode::Abortive);
    }

    /// Our FIN is out (the application shut down its write half, or the library did):
    /// the fin-wait rule starts, unless the peer's FIN came first.
    pub(super) fn local_fin(&mut self, conn: &Conn, now: Instant) {
        conn.set_flag(Flags::LOCAL_FIN);
        if conn.has(Flags::PEER_FIN) {
            self.close_wait_over(conn.index(), now);
            // Both directions are done: nothing left to enforce.
            self.retire(conn.index());
            return;
        }
        if let Some(t) = self.shared.config.fin_wait_timeout() {
            let acked = Sample::take(conn).write;
            let clocks = self
                .entry_mut(conn.index())
                .clocks
                .get_or_insert_with(Box::default);
            if clocks.fin_wait.is_none() {
                clocks.fin_wait = Some(IdleClock::new(t, acked, now));
            }
        }
        self.reschedule(conn);
    }

    pub(super) fn peer_fin(&mut self, conn: &Conn, now: Instant) {
        conn.set_flag(Flags::PEER_FIN);
        if conn.has(Flags::LOCAL_FIN) {
            // Both directions are done: nothing left to enforce.
            self.retire(conn.index());
            return;
        }
        let timeout = self.shared.config.close_wait_timeout();
        let written = timeout.map(|_| Sample::take(conn).write);
        let clocks = self
            .entry_mut(conn.index())
            .clocks
            .get_or_insert_with(Box::default);
        clocks.peer_fin_at.get_or_insert(now);
        if let (Some(t), Some(written), None) = (timeout, written, clocks.close_wait) {
            clocks.close_wait = Some(IdleClock::new(t, written, now));
        }
        self.reschedule(conn);
    }

    /// Our close (a FIN, a reset, a drop) ended the connection's `CLOSE_WAIT`, if it was
    /// in it: the metrics learn how long it sat there.
    pub(super) fn close_wait_over(&mut self, index: u32, now: Instant) {
        let at = self
            .entry_mut(index)
            .clocks
            .as_mut()
            .and_then(|c| c.peer_fin_at.take());
        if let Some(at) = at {
            self.shared
                .counters
                .close_wait_ended(now.saturating_duration_since(at));
        }
    }
}
