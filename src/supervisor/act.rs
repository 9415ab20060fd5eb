//! A look at a connection and what comes of it: the sample is taken here, the rules
//! decide ([`Watch::look`](crate::rules::Watch::look)), and this carries the decision out:
//! a close, a kernel end, a lingering close's end, the next deadline, a watch.

use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use socket2::SockRef;

use super::Supervisor;
use crate::config::CloseMode;
use crate::conn::{Conn, Flags};
use crate::rules::{Fate, Kernel, Limits, Look, Owed, Sample, WriteWatch};
use crate::state::CloseReason;
use crate::sys;
use crate::tcp_info::TcpInfo;

/// What a close from outside found.
enum Closing {
    /// The kernel had ended the connection already.
    Over,
    /// It had a close reason already, and a graceful close was asked: nothing to do.
    Already,
    /// Closed: `claimed` are the flags before, if the reason was ours to claim.
    Done {
        claimed: Option<Flags>,
        result: std::io::Result<()>,
    },
}

impl Supervisor {
    /// The rules' settings (under a framework serve, with its defaults).
    pub(super) fn limits(&self) -> Limits {
        self.limits[usize::from(self.shared.served.load(Relaxed))]
    }

    /// The connection in slot `index` as of now.
    fn sample(&mut self, index: u32, conn: &Conn) -> Sample {
        let lingering = self.slots.watch(index).is_lingering();
        let info = if lingering {
            self.lingering.tcp_info(index)
        } else {
            conn.tcp_info()
        };
        let flags = conn.flags();
        Sample {
            read: conn.bytes_read(),
            written: conn.bytes_written(),
            peer_fin: flags.contains(Flags::PEER_FIN),
            our_fin: flags.contains(Flags::LOCAL_FIN),
            owes: match lingering {
                true => Owed::No,
                false => conn.owes_data(),
            },
            user_queued: !lingering && conn.user_queued(),
            kernel: info.map(Kernel::from),
        }
    }

    /// The first look, when the connection is registered.
    pub(super) fn first_look(&mut self, index: u32, now: Instant) {
        if crate::admission::watches_writes_from_accept(&self.shared) {
            // The stream was asked at accept: the look leaves the watch as it is, with
            // no `TCP_INFO` of its own to check for a write in between.
            self.slots.watch_mut(index).writes_asked();
        }
        self.look(index, now);
    }

    /// Looks at the connection in slot `index` and does what the rules say.
    pub(super) fn look(&mut self, index: u32, now: Instant) {
        let conn = self.slots.conn(index);
        let limits = self.limits();
        let accepted = conn.accepted_ns();
        let now_ns = self.now_ns(now);
        // A graceful close changes what applies (the rules that bound our FIN start), and
        // a watch set just now may race with the stream: look again, a few times at most.
        for _ in 0..4 {
            let sample = self.sample(index, &conn);
            self.close_waits.note(index, &sample, now_ns);
            let look = self
                .slots
                .watch_mut(index)
                .look(&sample, &limits, accepted, now_ns);
            match look {
                Look::Close { reason, abortive } => {
                    if !self.close(index, &conn, reason, abortive, true, now) {
                        return;
                    }
                }
                Look::AskOwner { reason } => self.ask_owner(&conn, reason),
                Look::ForceClose => {
                    if !self.force_close(index, &conn, now) {
                        return;
                    }
                }
                Look::KernelEnded => {
                    let info = conn.tcp_info();
                    return self.kernel_ended(index, info, None, now);
                }
                Look::LingerDone => return self.end_linger(index, &conn, None),
                Look::Wait {
                    next,
                    watch_writes,
                    watch_reads,
                } => {
                    // A deadline is always in the future: never a spin.
                    let mut next = next.map(|n| n.max(now_ns.saturating_add(1)));
                    if let Some(step) = self.lingering.next_look(index, &sample, now_ns) {
                        next = Some(next.map_or(step, |n| n.min(step)));
                    }
                    let writes = self
                        .slots
                        .watch_mut(index)
                        .write_watch(watch_writes, conn.watches_writes());
                    if writes == WriteWatch::Pause {
                        let step = now_ns.saturating_add(limits.write_watch_pause());
                        next = Some(next.map_or(step, |n| n.min(step)));
                    }
                    self.schedule(index, next);
                    // Asked before looking again, so that a change in between is not
                    // missed.
                    let mut again = false;
                    if writes == WriteWatch::Ask {
                        conn.watch_writes();
                        again |= conn.user_queued()
                            || conn.tcp_info().is_some_and(|i| i.has_pending_send());
                    }
                    if watch_reads {
                        conn.watch_reads();
                        again |= conn.owes_data() != Owed::No;
                    }
                    if !again {
                        return;
                    }
                }
            }
        }
    }

    /// Closes a connection from outside for `reason`, and (`ends_task`) ends its task if
    /// it was spawned through the library. Returns whether to look again (its rules
    /// changed: our FIN is out).
    ///
    /// Graceful: `shutdown(Write)`, so the peer gets our FIN after every byte already
    /// queued, and no reset if it sends more meanwhile (`shutdown(Both)` would make Linux
    /// reset the connection at its next byte and drop the queue). The stream's reads end
    /// at EOF, a parked one woken; its writes fail. `fin_wait_timeout` and
    /// `write_idle_timeout` keep bounding the socket until the peer answers; if the task
    /// is ended with data still queued, the lingering close delivers it.
    ///
    /// Abortive (`abortive`, or [`CloseMode::Abortive`]): a reset that leaves the
    /// descriptor open. Also the last step of a graceful close whose peer never answered
    /// (the connection keeps its first reason).
    ///
    /// The reason is claimed while the descriptor is borrowed, so that an application
    /// dropping its stream at the same moment cannot see a close that did not happen.
    pub(super) fn close(
        &mut self,
        index: u32,
        conn: &Conn,
        reason: CloseReason,
        abortive: bool,
        ends_task: bool,
        now: Instant,
    ) -> bool {
        let abortive = abortive || self.shared.config.close_mode() == CloseMode::Abortive;
        if self.slots.watch(index).is_lingering() {
            self.reset_lingering(index, conn, reason);
            return false;
        }
        let set = if abortive {
            Flags::CLOSED
        } else {
            Conn::SHUT_FLAGS
        };
        let closing = conn.with_fd(|fd| {
            // Over without us (both FINs exchanged behind the stream's back, or a failure
            // no event reported yet): `getpeername` fails once the kernel closed it.
            if SockRef::from(&fd).peer_addr().is_err() {
                return Closing::Over;
            }
            let claimed = conn.claim(reason, set);
            if abortive {
                let result = sys::disconnect(fd);
                Closing::Done { claimed, result }
            } else if claimed.is_some() {
                let result = SockRef::from(&fd).shutdown(Shutdown::Write);
                Closing::Done { claimed, result }
            } else {
                Closing::Already
            }
        });
        let span = self.spans.of(conn);
        match closing {
            // Released meanwhile: its `Released` message follows.
            None => false,
            Some(Closing::Over) if sys::HAS_TCP_INFO => {
                let info = conn.tcp_info();
                self.kernel_ended(index, info, None, now);
                false
            }
            Some(Closing::Over) => {
                // Without the kernel's counters a reset cannot be told from the normal
                // end after both FINs (made behind the stream's back): nothing is
                // counted; a reset is the sweep's to find, with its error.
                tracing::debug!(parent: &span, reason = %reason, "deadline passed after the connection had ended");
                self.slots.watch_mut(index).kernel_ended(false);
                self.schedule(index, None);
                false
            }
            Some(Closing::Already) => {
                if ends_task && self.slots.watch_mut(index).end_task() {
                    self.tasks.abort(index);
                }
                false
            }
            Some(Closing::Done { claimed, result }) => {
                if let Some(old) = claimed {
                    conn.announce(reason, old, set);
                }
                if !abortive {
                    // The kernel does not wake a read parked on our own shutdown.
                    conn.wake_reader();
                }
                self.close_waits.over(index, self.now_ns(now), &self.shared);
                let aborted_task = self.slots.watch_mut(index).closed(abortive, ends_task);
                if aborted_task {
                    self.tasks.abort(index);
                }
                match (result, claimed) {
                    (Err(e), _) => {
                        tracing::debug!(parent: &span, reason = %reason, error = %e, "close failed (already closed?)");
                    }
                    (Ok(()), None) => {
                        tracing::info!(parent: &span, reason = %reason, "reset after our FIN went unanswered");
                    }
                    (Ok(()), Some(_)) => {
                        tracing::info!(parent: &span, reason = %reason, abortive, aborted_task, "closed by tcp-hygiene");
                    }
                }
                !abortive
            }
        }
    }

    /// Tells the connection's owner (a framework serve over TLS) to close it, for
    /// `reason`: the reason is claimed and counted now, and the owner, woken, winds the
    /// connection down (`close_notify`, then our FIN).
    fn ask_owner(&mut self, conn: &Conn, reason: CloseReason) {
        if let Some(old) = conn.claim(reason, Flags::NONE) {
            conn.announce(reason, old, Flags::NONE);
        }
        conn.notify().notify_waiters();
        // The owner's task, if it waits in a read, looks at once (see
        // `ConnectionHandle::is_close_asked`).
        conn.wake_reader();
        tracing::debug!(parent: &self.spans.of(conn), reason = %reason, "asked the owner to close");
    }

    /// The owner did not close the connection within its grace: closes it at the TCP
    /// level as [`close`](Self::close) does, under the reason already claimed. Returns
    /// whether to look again.
    fn force_close(&mut self, index: u32, conn: &Conn, now: Instant) -> bool {
        let done = conn.with_fd(|fd| {
            let old = conn.set_word_flags(Conn::SHUT_FLAGS);
            (old, SockRef::from(&fd).shutdown(Shutdown::Write))
        });
        let Some((old, result)) = done else {
            return false; // released meanwhile
        };
        conn.flags_changed(old, Conn::SHUT_FLAGS);
        conn.wake_reader();
        self.close_waits.over(index, self.now_ns(now), &self.shared);
        let aborted_task = self.slots.watch_mut(index).closed(false, true);
        if aborted_task {
            self.tasks.abort(index);
        }
        tracing::info!(parent: &self.spans.of(conn), reason = ?conn.close_reason(), aborted_task, ok = result.is_ok(), "the owner did not close in time: closed by tcp-hygiene");
        true
    }

    /// A close someone asked for (the controller, a framework serve): gracefully or
    /// abortively as asked. During a drain, a graceful `Drained` close before the hard
    /// deadline counts as idle-closed (the HTTP layer closes what has no request in
    /// flight); other closes keep the connection's fate.
    pub(super) fn close_on_request(
        &mut self,
        index: u32,
        mode: CloseMode,
        reason: CloseReason,
        now: Instant,
    ) {
        if self.slots.watch(index).in_drain()
            && reason == CloseReason::Drained
            && mode == CloseMode::Graceful
        {
            self.slots.watch_mut(index).set_fate(Fate::IdleClosed);
        }
        let conn = self.slots.conn(index);
        let now_ns = self.now_ns(now);
        let closing =
            self.slots
                .watch_mut(index)
                .closing(reason, mode == CloseMode::Abortive, now_ns);
        let again = match closing {
            Look::Close { reason, abortive } => {
                self.close(index, &conn, reason, abortive, true, now)
            }
            Look::AskOwner { reason } => {
                self.ask_owner(&conn, reason);
                true
            }
            Look::ForceClose => self.force_close(index, &conn, now),
            // The owner was asked already; its grace runs.
            _ => false,
        };
        if again {
            self.look(index, now);
        }
    }

    /// The kernel ended the connection: reset by the peer, keepalive or user timeout, or
    /// (no error) the normal end after both FINs. `taken` is a socket error the caller
    /// already took from the socket (a peek consumes it).
    pub(super) fn kernel_ended(
        &mut self,
        index: u32,
        info: Option<TcpInfo>,
        taken: Option<i32>,
        now: Instant,
    ) {
        let conn = self.slots.conn(index);
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
        let reason = CloseReason::of_kernel_end(errno, info, conn.bytes_written(), local_fin);
        self.close_waits.over(index, self.now_ns(now), &self.shared);
        let abort = self.slots.watch_mut(index).kernel_ended(reason.is_some());
        self.schedule(index, None);
        match reason {
            // No error: both FINs went through (TIME_WAIT took the socket over, or
            // LAST_ACK ended). The normal end of a connection, not a failure.
            None => {
                conn.set_flag(Flags::PEER_FIN);
            }
            Some(reason) => {
                if conn.mark_closed(reason) {
                    tracing::info!(parent: &self.spans.of(&conn), reason = %reason, errno, aborted_task = abort, "connection failed in the kernel");
                }
            }
        }
        if abort {
            self.tasks.abort(index);
        }
    }

    /// A lingering close whose peer stopped taking data: nothing more can be delivered,
    /// so it is reset. The reset is counted only if the connection had no reason yet
    /// (each connection is counted once), and reported to no hook: `Released` was the
    /// connection's last event.
    fn reset_lingering(&mut self, index: u32, conn: &Conn, reason: CloseReason) {
        if let Some(fd) = self.lingering.fd(index) {
            let _ = sys::disconnect(fd);
        }
        let first = conn.claim(reason, Flags::CLOSED).is_some();
        if first {
            self.shared.counters.closed(reason);
        }
        tracing::info!(id = %conn.id(), reason = %reason, counted = first, "lingering close: reset, the peer stopped taking data");
        self.end_linger(index, conn, Some(reason));
    }

    /// A lingering close is over: the socket closes (an orphan bounded by `TCP_LINGER2`
    /// if the peer has not sent its FIN yet), and the slot is freed. How the connection
    /// ended is counted now unless it ended in a reset.
    pub(super) fn end_linger(&mut self, index: u32, conn: &Conn, reset: Option<CloseReason>) {
        let fin_wait = self.shared.config.fin_wait_timeout();
        if let Some(ending) = self.lingering.end(index, fin_wait, &self.shared) {
            if reset.is_none() {
                if let Some(peer_first) = ending {
                    self.shared.counters.ended(peer_first);
                }
            }
        }
        tracing::debug!(id = %conn.id(), reset = reset.is_some(), "lingering close: done");
        self.schedule(index, None);
        self.spans.forget(index);
        self.slots.free(index);
    }
}
