//! Per-connection shared state: written by the stream on the hot path (two plain relaxed
//! counters), read and acted on by the supervisor.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::state::flags::{self, RELEASED};
use crate::state::{CloseReason, ConnectionState};
use crate::stats::{KernelState, TcpInfo};
use crate::supervisor::{Handover, Msg, Shared};
use crate::sys::{self, SocketGuard};

/// The most sockets one listener keeps open after their application dropped them, to
/// deliver what is still queued (see [`Conn::release`]); past it, closes are left to the
/// kernel's orphan handling, bounded by `TCP_USER_TIMEOUT` and `TCP_LINGER2`.
const MAX_LINGERING: usize = 4096;

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted_at: Instant,
    /// Written only by the stream's `poll_read` (one writer), read by anyone.
    pub(crate) bytes_read: AtomicU64,
    /// Written only by the stream's `poll_write` (one writer), read by anyone.
    pub(crate) bytes_written: AtomicU64,
    /// `bytes_read` when a read last returned `Pending` (`u64::MAX`: never): while it
    /// still equals `bytes_read`, the application waits in a read that got nothing.
    read_parked_at: AtomicU64,
    /// `bytes_read` at the last write: while it equals `bytes_read`, the application's
    /// last action was a write after the last read that returned data.
    read_at_last_write: AtomicU64,
    flags: AtomicU8,
    /// 0 = none, otherwise `CloseReason::index() + 1`.
    reason: AtomicU8,
    /// errno the supervisor took from the socket (`SO_ERROR`), surfaced to the
    /// application's next read or write so that no error turns into a clean EOF.
    kernel_error: AtomicI32,
    /// errno the application's own read or write got from the kernel (it took the
    /// read-once socket error before the supervisor could), for labelling the close.
    app_error: AtomicI32,
    pub(crate) socket: SocketGuard,
    changed: Notify,
    /// The task parked in `poll_read`, woken when the library ends the connection (only
    /// our write half is shut down, so the kernel would not wake it).
    reader: Mutex<Option<Waker>>,
    abort: Mutex<Option<AbortHandle>>,
    pub(crate) span: tracing::Span,
    pub(crate) shared: Arc<Shared>,
}

impl Conn {
    pub(crate) fn new(id: u64, peer: SocketAddr, socket: SocketGuard, shared: Arc<Shared>) -> Self {
        shared.counters.enter_state(ConnectionState::Open);
        Self {
            id,
            peer,
            accepted_at: Instant::now(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            read_parked_at: AtomicU64::new(u64::MAX),
            read_at_last_write: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            reason: AtomicU8::new(0),
            kernel_error: AtomicI32::new(0),
            app_error: AtomicI32::new(0),
            socket,
            changed: Notify::new(),
            reader: Mutex::new(None),
            abort: Mutex::new(None),
            span: tracing::info_span!("tcp_hygiene::conn", id, %peer),
            shared,
        }
    }

    #[inline]
    pub(crate) fn add_read(&self, n: usize) {
        // Single writer: a load and a store, no read-modify-write instruction.
        self.bytes_read.store(
            self.bytes_read.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
    }

    #[inline]
    pub(crate) fn add_written(&self, n: usize) {
        self.bytes_written.store(
            self.bytes_written.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
        // The first write after a read that returned data notes it (a store only then).
        let read = self.bytes_read.load(Relaxed);
        if self.read_at_last_write.load(Relaxed) != read {
            self.read_at_last_write.store(read, Relaxed);
        }
    }

    /// A read returned `Pending`: remembers that the application waits in a read, and its
    /// waker, so that [`wake_reader`](Self::wake_reader) can end the wait with EOF.
    pub(crate) fn park_read(&self, waker: &Waker) {
        self.read_parked_at
            .store(self.bytes_read.load(Relaxed), Relaxed);
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Wakes a read parked in the stream, if any.
    pub(crate) fn wake_reader(&self) {
        let waker = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the application waits in a read, has nothing left to read that it has
    /// been given, and wrote after the last read that returned data: a connection idle
    /// between requests, as far as the stream can tell. (The kernel's side, nothing
    /// unread and nothing unacknowledged, is for the caller to check.)
    pub(crate) fn waits_for_next_request(&self) -> bool {
        let read = self.bytes_read.load(Relaxed);
        self.read_parked_at.load(Relaxed) == read && self.read_at_last_write.load(Relaxed) == read
    }

    pub(crate) fn flags(&self) -> u8 {
        self.flags.load(Relaxed)
    }

    pub(crate) fn state(&self) -> ConnectionState {
        ConnectionState::from_flags(self.flags())
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }

    /// Sets `flag`; returns whether it was newly set. Updates the gauges, logs the state
    /// change and wakes everyone waiting on the connection.
    pub(crate) fn set_flag(&self, flag: u8) -> bool {
        self.set_flags(flag) & flag == 0
    }

    /// Sets every bit of `mask`; returns the flags before. Updates the gauges, logs the
    /// state change and wakes everyone waiting on the connection if anything changed.
    fn set_flags(&self, mask: u8) -> u8 {
        let old = self.flags.fetch_or(mask, Relaxed);
        if old & mask == mask {
            return old;
        }
        let (from, to) = (
            ConnectionState::from_flags(old),
            ConnectionState::from_flags(old | mask),
        );
        if from != to {
            if old & RELEASED == 0 {
                self.shared.counters.leave_state(from);
                self.shared.counters.enter_state(to);
            }
            tracing::debug!(parent: &self.span, from = %from, to = %to, "state change");
        }
        self.changed.notify_waiters();
        old
    }

    /// Records `reason` as why the connection closed (the first reason wins) and counts
    /// it. Returns false if it already had one.
    fn claim_reason(&self, reason: CloseReason) -> bool {
        let claimed = self
            .reason
            .compare_exchange(0, reason.index() as u8 + 1, Relaxed, Relaxed)
            .is_ok();
        if claimed {
            self.shared.counters.closed_by_reason[reason.index()].fetch_add(1, Relaxed);
        }
        claimed
    }

    /// Marks the connection closed for `reason`: by an abortive close, or by the kernel.
    /// Returns false if it was already closed.
    pub(crate) fn mark_closed(&self, reason: CloseReason) -> bool {
        if !self.claim_reason(reason) {
            return false;
        }
        self.set_flag(flags::CLOSED);
        true
    }

    /// Marks the connection closed gracefully by the library for `reason`, right before
    /// it shuts down our write half: from now on reads return EOF and writes fail.
    /// Returns false if it was already closed.
    pub(crate) fn mark_shut(&self, reason: CloseReason) -> bool {
        if !self.claim_reason(reason) {
            return false;
        }
        self.set_flags(flags::CLOSED | flags::SHUT | flags::LOCAL_FIN);
        true
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        match self.reason.load(Relaxed) {
            0 => None,
            n => CloseReason::from_index(n as usize - 1),
        }
    }

    /// The errno the application's own I/O got, if any.
    pub(crate) fn app_error(&self) -> Option<i32> {
        match self.app_error.load(Relaxed) {
            0 => None,
            errno => Some(errno),
        }
    }

    pub(crate) fn set_kernel_error(&self, errno: i32) {
        let _ = self
            .kernel_error
            .compare_exchange(0, errno, Relaxed, Relaxed);
    }

    /// The error the application should see instead of `err` (or instead of EOF when
    /// `err` is `None`), if the library knows better. Only called off the hot path.
    pub(crate) fn explain(&self, err: Option<io::Error>) -> Option<io::Error> {
        if let Some(errno) = err.as_ref().and_then(io::Error::raw_os_error) {
            let _ = self.app_error.compare_exchange(0, errno, Relaxed, Relaxed);
        }
        match self.kernel_error.load(Relaxed) {
            0 => match (err, self.close_reason()) {
                (Some(e), Some(reason)) => Some(io::Error::new(
                    e.kind(),
                    crate::error::Closed { reason, source: e },
                )),
                (err, _) => err,
            },
            errno => Some(io::Error::from_raw_os_error(errno)),
        }
    }

    /// The application read EOF: the peer's FIN, seen from the application's side. The
    /// supervisor hears of it unless its own watcher saw the FIN first: on platforms
    /// without kernel FIN events (or a socket the watcher could not take) this is what
    /// starts the `CLOSE_WAIT` clock.
    pub(crate) fn observed_eof(&self) {
        let old = self.set_flags(flags::PEER_FIN | flags::READ_EOF);
        if old & flags::PEER_FIN == 0 {
            let _ = self.shared.tx.send(Msg::PeerFin(self.id));
        }
    }

    /// The application shut down its write half.
    pub(crate) fn observed_local_shutdown(&self) {
        if self.set_flag(flags::LOCAL_FIN) {
            let _ = self.shared.tx.send(Msg::LocalFin(self.id));
        }
    }

    /// Waits until any flag changes after this call, or until `done` holds.
    pub(crate) async fn wait_until(&self, done: impl Fn(u8) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self.flags()) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn tcp_info(&self) -> Option<TcpInfo> {
        self.socket.with(sys::tcp_info).and_then(Result::ok)
    }

    pub(crate) fn set_abort_handle(&self, handle: AbortHandle) {
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Aborts the task that owns the connection, if it was spawned through the library.
    pub(crate) fn abort_task(&self) -> bool {
        match self.abort.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// The application is done with the descriptor: it dropped the stream (`closing`, the
    /// descriptor closes right after this returns) or took the tokio stream back. Must
    /// run before the descriptor is closed.
    pub(crate) fn release(&self, closing: bool) {
        if self.is_released() {
            return;
        }
        let handover = if closing {
            self.socket.with(|fd| self.before_close(fd)).flatten()
        } else {
            None
        };
        self.socket.release();
        let old = self.flags.fetch_or(RELEASED, Relaxed);
        if old & RELEASED != 0 {
            return;
        }
        let counters = &self.shared.counters;
        counters.leave_state(ConnectionState::from_flags(old));
        counters.released.fetch_add(1, Relaxed);
        self.abort.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.shared.tx.send(Msg::Released(self.id, handover));
        self.shared.on_release(self.peer.ip());
        self.changed.notify_waiters();
        self.wake_reader();
    }

    /// Makes the close that follows graceful and bounded. Closing a socket with unread
    /// data sends RST (and drops what we had queued), so that data is discarded first.
    /// If data is still on its way to a peer that may still send, a closed socket would
    /// become an orphan that Linux resets at the peer's next byte (RFC 1122): the socket
    /// is handed to the supervisor instead, which keeps it open, reads and discards what
    /// arrives, and closes it once everything is acknowledged (a lingering close).
    /// Otherwise the orphan gets bounds: `TCP_LINGER2` from `fin_wait_timeout` and a
    /// `TCP_USER_TIMEOUT` no longer than `write_idle_timeout`.
    fn before_close(&self, fd: BorrowedFd<'_>) -> Option<Handover> {
        let c = &self.shared.config.inner;
        if c.linger == Some(Duration::ZERO) {
            return None; // the user asked for a reset on close
        }
        let flags = self.flags();
        if flags & flags::READ_EOF != 0 && c.write_idle_timeout.is_none() {
            return None; // the usual end: the peer closed first and we read it all
        }
        let info = sys::tcp_info(fd).ok();
        if info.is_some_and(|i| i.state == KernelState::Close) {
            return None; // over already (reset, timed out, or both FINs exchanged)
        }
        let peer_done =
            flags & flags::PEER_FIN != 0 || info.is_some_and(|i| i.state.peer_fin_received());
        if flags & flags::READ_EOF == 0 {
            let read = self.bytes_read.load(Relaxed);
            let unread = info.is_none_or(|i| i.bytes_received > read + u64::from(peer_done));
            if unread {
                let _ = sys::discard_unread(fd);
            }
        }
        let pending = info.map(|i| i.has_pending_send());
        if pending == Some(true) && !peer_done {
            let reset_asked = socket2::SockRef::from(&fd)
                .linger()
                .is_ok_and(|l| l == Some(Duration::ZERO));
            if reset_asked {
                return None; // the application set SO_LINGER 0 itself: it wants the RST
            }
            if let Some(handover) = self.hand_over(fd, flags) {
                return Some(handover);
            }
        }
        if !peer_done {
            if let Some(t) = c.fin_wait_timeout {
                let _ = sys::set_orphan_fin_wait(fd, t);
            }
        }
        if pending != Some(false) {
            if let Some(w) = c.write_idle_timeout {
                let bound = c.user_timeout.map_or(w, |u| u.min(w));
                let _ = sys::set_user_timeout(&socket2::SockRef::from(&fd), bound);
            }
        }
        None
    }

    fn hand_over(&self, fd: BorrowedFd<'_>, flags: u8) -> Option<Handover> {
        let lingering = &self.shared.lingering;
        if lingering.fetch_add(1, Relaxed) >= MAX_LINGERING {
            lingering.fetch_sub(1, Relaxed);
            return None;
        }
        match fd.try_clone_to_owned() {
            Ok(fd) => Some(Handover {
                fd,
                fin_sent: flags & flags::LOCAL_FIN != 0,
            }),
            Err(error) => {
                lingering.fetch_sub(1, Relaxed);
                tracing::debug!(parent: &self.span, %error, "cannot keep the socket for a lingering close");
                None
            }
        }
    }

    pub(crate) fn is_released(&self) -> bool {
        self.has(RELEASED)
    }
}
