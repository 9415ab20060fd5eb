//! One connection's state, shared by the application's stream (two relaxed counters on
//! the hot path), its handles, and the supervisor that acts on it.

mod flags;
#[allow(unsafe_code)]
mod ptr;
mod refs;
mod release;
pub(crate) mod table;

pub(crate) use flags::{word, Flags};
pub(crate) use ptr::Conn;
pub(crate) use table::{Page, PAGE};

use crate::id::ConnectionId;
use crate::rules::Owed;

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use tokio::sync::Notify;

use crate::observe::{ConnectionEvent, ConnectionEventKind};
use crate::shared::Shared;
use crate::state::{CloseReason, ConnectionState};
use crate::sys;
use crate::tcp_info::TcpInfo;

impl Conn {
    /// The listener's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.page().shared
    }

    /// The connection's slot in the table.
    pub(crate) fn index(&self) -> u32 {
        self.page().base + self.offset()
    }

    /// Counts `n` bytes the application read.
    ///
    /// Only the stream calls this and [`add_written`](Self::add_written), from its polls
    /// under `&mut self`: the counts' single-writer updates (and the plain read in
    /// `Slot::add_written`) rely on it.
    #[inline]
    pub(crate) fn add_read(&self, n: usize) {
        self.slot().add_read(n);
    }

    /// Counts `n` bytes the application wrote; whether the write has something to note
    /// ([`note_write`](Self::note_write)).
    #[inline]
    pub(crate) fn add_written(&self, n: usize) -> bool {
        self.slot().add_written(n)
    }

    /// The slot's generation: with the index, which connection this is.
    pub(crate) fn gen(&self) -> u32 {
        self.slot().refs.generation()
    }

    /// Unique within the listener: slot and generation.
    pub(crate) fn id(&self) -> ConnectionId {
        ConnectionId::new(self.index(), self.gen())
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.slot().peer()
    }

    pub(crate) fn accepted_at(&self) -> Instant {
        self.shared().table.instant(self.accepted_ns())
    }

    /// When it was accepted, on the table's clock (the rules' clock).
    pub(crate) fn accepted_ns(&self) -> u64 {
        self.slot().accepted_ns.load(Relaxed)
    }

    pub(crate) fn bytes_read(&self) -> u64 {
        self.slot().bytes_read.load(Relaxed)
    }

    pub(crate) fn bytes_written(&self) -> u64 {
        self.slot().bytes_written.load(Relaxed)
    }

    /// A write found something to note (see `Slot::add_written`): it follows a read
    /// that returned data, or the supervisor asked to hear of it.
    #[cold]
    pub(crate) fn note_write(&self) {
        if self.slot().note_write() {
            self.shared().tx.wrote(self.id());
        }
    }

    /// Asks to hear of the next write.
    pub(crate) fn watch_writes(&self) {
        self.slot().watch_writes();
    }

    /// Whether the watch asked for by [`watch_writes`](Self::watch_writes) still stands:
    /// the stream has not written since (nor its serve queued data).
    pub(crate) fn watches_writes(&self) -> bool {
        self.slot().watches_writes()
    }

    /// A read returned `Pending`: remembers that the application waits in a read, and its
    /// waker, so that [`wake_reader`](Self::wake_reader) can end the wait with EOF; and,
    /// with `judge`, whether the peer started owing data
    /// ([`waits_in_read`](Self::waits_in_read)). Returns `false`, remembering nothing, if
    /// the library has shut the connection ([`Flags::SHUT`]): the read must end in EOF.
    /// A shut the library makes after the waker is remembered wakes it.
    #[inline]
    pub(crate) fn park_read(&self, waker: &Waker, judge: bool) -> bool {
        let slot = self.slot();
        let Some(word) = slot.cell.register_waker(waker, Flags::SHUT.bits().into()) else {
            return false;
        };
        let read = slot.bytes_read.load(Relaxed);
        slot.read_parked_at.store(read as u32, Relaxed);
        if judge {
            self.owes(word, read);
        }
        true
    }

    /// The application waits for more data: if a read returned data since our last
    /// write, the peer started owing the rest (mid-request), which the supervisor may
    /// have asked to hear of (`min_receive_rate`). Judged where the application's read
    /// parks: the stream's own read, or (over TLS, whose layer reads ahead of the
    /// application and parks the stream's read with every request) the TLS layer's.
    #[cfg(feature = "tls")]
    pub(crate) fn waits_in_read(&self) {
        let slot = self.slot();
        self.owes(slot.cell.load_relaxed(), slot.bytes_read.load(Relaxed));
    }

    /// [`waits_in_read`](Self::waits_in_read) with the state word's user bits and the
    /// read count already loaded.
    #[inline]
    fn owes(&self, word: u32, read: u64) {
        if word & u32::from(Flags::WATCH_READS.bits()) != 0
            && word & (word::RECEIVED | word::OWED) == 0
            && self.slot().read_at_last_write() != read
        {
            self.started_owing();
        }
    }

    /// The peer started owing data (a read returned data, then waits for more), and the
    /// supervisor had asked to hear of it (`min_receive_rate`).
    #[cold]
    fn started_owing(&self) {
        let old = self
            .slot()
            .cell
            .fetch_clear(Flags::WATCH_READS.bits().into());
        if word::flags(old).contains(Flags::WATCH_READS) {
            self.shared().tx.look(self.id());
        }
    }

    /// Asks to hear when the peer starts owing data.
    pub(crate) fn watch_reads(&self) {
        self.slot().cell.fetch_or(Flags::WATCH_READS.bits().into());
    }

    /// Whether the peer owes us data. A framework serve knows (a handler waits for more
    /// of a request body; or the request is fully received); otherwise the stream's
    /// marks say: the application waits in a read, and the last thing that moved was the
    /// peer's data rather than our reply.
    pub(crate) fn owes_data(&self) -> Owed {
        let slot = self.slot();
        let word = slot.cell.load();
        if word & word::OWED != 0 {
            return Owed::Yes;
        }
        let read = slot.bytes_read.load(Relaxed);
        let likely = slot.read_parked_at.load(Relaxed) == read as u32
            && slot.read_at_last_write() != read
            && word & word::RECEIVED == 0;
        match likely {
            true => Owed::Likely,
            false => Owed::No,
        }
    }

    /// A framework serve's word on the request in flight: fully received (the peer owes
    /// nothing until the next request) or not (the stream's marks say again).
    #[cfg(feature = "hyper")]
    pub(crate) fn set_received(&self, received: bool) {
        if received {
            self.slot().cell.fetch_or(word::RECEIVED);
        } else {
            self.slot().cell.fetch_clear(word::RECEIVED);
        }
    }

    /// Whether a framework serve holds response data the peer has not made room for.
    pub(crate) fn user_queued(&self) -> bool {
        self.slot().user_queued.load(Relaxed)
    }

    /// A framework serve's word on its response data: some waits for the peer to make
    /// room for it (an HTTP/2 window), or none. The rules that apply while data is
    /// queued judge it too (`min_send_rate`, `write_idle_timeout`).
    #[cfg(feature = "hyper")]
    pub(crate) fn set_user_queued(&self, queued: bool) {
        self.slot().user_queued.store(queued, Relaxed);
        if queued && self.slot().unwatch_writes() {
            self.shared().tx.wrote(self.id());
        }
    }

    /// A framework serve's word on a request body: a handler waits for more of it (the
    /// peer owes data) or not.
    #[cfg(feature = "hyper")]
    pub(crate) fn set_owed(&self, owed: bool) {
        if owed {
            let old = self.slot().cell.fetch_or(word::OWED);
            if old & word::OWED == 0 && word::flags(old).contains(Flags::WATCH_READS) {
                self.started_owing();
            }
        } else {
            self.slot().cell.fetch_clear(word::OWED);
        }
    }

    /// Wakes a read parked in the stream, if any.
    pub(crate) fn wake_reader(&self) {
        if let Some(waker) = self.slot().cell.take_waker() {
            waker.wake();
        }
    }

    /// Whether the application waits in a read that got nothing and wrote after the last
    /// read that returned data: idle between requests, as far as the stream can tell.
    /// (The kernel's side, nothing unread and nothing unacknowledged, is the caller's.)
    pub(crate) fn waits_for_next_request(&self) -> bool {
        let slot = self.slot();
        let read = slot.bytes_read.load(Relaxed);
        slot.read_parked_at.load(Relaxed) == read as u32 && slot.read_at_last_write() == read
    }

    #[inline]
    pub(crate) fn flags(&self) -> Flags {
        self.slot().flags()
    }

    /// Whether any of `flags` is set.
    #[inline]
    pub(crate) fn has(&self, flags: Flags) -> bool {
        self.flags().intersects(flags)
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.flags().state()
    }

    pub(crate) fn is_released(&self) -> bool {
        self.has(Flags::RELEASED)
    }

    /// Sets `flag`; returns whether it was newly set.
    pub(crate) fn set_flag(&self, flag: Flags) -> bool {
        !self.set_flags(flag).contains(flag)
    }

    /// Sets every bit of `mask`; returns the flags before. Keeps the gauges by state, and
    /// wakes whoever waits on the connection if anything changed.
    pub(crate) fn set_flags(&self, mask: Flags) -> Flags {
        let old = word::flags(self.slot().cell.fetch_or(u32::from(mask.bits())));
        self.flags_changed(old, mask);
        old
    }

    /// Sets `flags` in the word and nothing else (no user code runs, so it may be called
    /// while the descriptor is borrowed); returns the flags before. Follow with
    /// [`flags_changed`](Self::flags_changed).
    pub(crate) fn set_word_flags(&self, flags: Flags) -> Flags {
        word::flags(self.slot().cell.fetch_or(u32::from(flags.bits())))
    }

    /// After `set` was set on flags that were `old`: keeps the gauges by state, tells the
    /// hook, and wakes whoever waits on the connection, if anything changed.
    pub(crate) fn flags_changed(&self, old: Flags, set: Flags) {
        if old.contains(set) {
            return;
        }
        let (from, to) = (old.state(), (old | set).state());
        if from != to && !old.contains(Flags::RELEASED) {
            let counters = &self.shared().counters;
            counters.leave_state(from);
            counters.enter_state(to);
        }
        if from != to {
            tracing::debug!(id = %self.id(), peer = %self.peer(), %from, %to, "state change");
        }
        for (flag, kind) in [
            (Flags::PEER_FIN, ConnectionEventKind::PeerClosed),
            (Flags::LOCAL_FIN, ConnectionEventKind::LocalClosed),
        ] {
            if set.contains(flag) && !old.contains(flag) && !old.contains(Flags::RELEASED) {
                self.event(kind);
            }
        }
        self.notify().notify_waiters();
    }

    /// Tells the hook (see [`Builder::on_event`](crate::Builder::on_event)) of `kind`.
    pub(crate) fn event(&self, kind: ConnectionEventKind) {
        if let Some(hook) = self.shared().config.hook() {
            hook.call(&ConnectionEvent {
                id: self.id(),
                peer: self.peer(),
                since_accept: self.accepted_at().elapsed(),
                kind,
            });
        }
    }

    /// Claims `reason` as why the connection closed and sets `flags` with it, in one
    /// atomic step; nothing else (no user code runs, so it may be called while the
    /// descriptor is borrowed). Returns the flags before, or `None` if it had a reason
    /// already: the first reason wins. Follow with [`announce`](Self::announce).
    pub(crate) fn claim(&self, reason: CloseReason, flags: Flags) -> Option<Flags> {
        let (old, claimed) = self.slot().cell.update(|w| word::claim(w, reason, flags));
        claimed.then(|| word::flags(old))
    }

    /// After a successful [`claim`](Self::claim): counts the reason, keeps the gauges by
    /// state, tells the hook, wakes whoever waits on the connection.
    pub(crate) fn announce(&self, reason: CloseReason, old: Flags, set: Flags) {
        self.shared().counters.closed(reason);
        let kind = match reason {
            CloseReason::ResetByPeer | CloseReason::KeepaliveFailed | CloseReason::UserTimeout => {
                ConnectionEventKind::Failed { reason }
            }
            _ => ConnectionEventKind::Closed { reason },
        };
        if !old.contains(Flags::RELEASED) {
            self.event(kind);
        }
        self.flags_changed(old, set);
    }

    /// Marks the connection closed for `reason`: by an abortive close, or by the kernel.
    /// Returns false if it was already closed.
    pub(crate) fn mark_closed(&self, reason: CloseReason) -> bool {
        match self.claim(reason, Flags::CLOSED) {
            Some(old) => {
                self.announce(reason, old, Flags::CLOSED);
                true
            }
            None => false,
        }
    }

    /// The flags the library sets when it closes a connection gracefully: from then on
    /// reads return EOF and writes fail.
    pub(crate) const SHUT_FLAGS: Flags =
        Flags::from_bits(Flags::CLOSED.bits() | Flags::SHUT.bits() | Flags::LOCAL_FIN.bits());

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        word::reason(self.slot().cell.load())
    }

    /// The errno the application's own I/O got, if any.
    pub(crate) fn app_errno(&self) -> Option<i32> {
        word::app_errno(self.slot().cell.load())
    }

    /// Remembers the socket error the supervisor took (read-once `SO_ERROR`), for the
    /// application's next read or write: no error turns into a clean EOF.
    pub(crate) fn set_kernel_errno(&self, errno: i32) {
        self.slot()
            .cell
            .update(|w| word::with_kernel_errno(w, errno));
    }

    /// The error the application should see instead of `err` (or instead of EOF when
    /// `err` is `None`), if the library knows better. Only called off the hot path.
    pub(crate) fn explain(&self, err: Option<io::Error>) -> Option<io::Error> {
        if let Some(errno) = err.as_ref().and_then(io::Error::raw_os_error) {
            self.slot().cell.update(|w| word::with_app_errno(w, errno));
        }
        let word = self.slot().cell.load();
        match word::kernel_errno(word) {
            Some(errno) => Some(io::Error::from_raw_os_error(errno)),
            None => match (err, word::reason(word)) {
                (Some(e), Some(reason)) => Some(io::Error::new(
                    e.kind(),
                    crate::error::Closed { reason, source: e },
                )),
                (err, _) => err,
            },
        }
    }

    /// The application read EOF: the peer's FIN, seen from the application's side. The
    /// supervisor hears of it unless its own watcher saw the FIN first: on platforms
    /// without kernel FIN events (or for a socket the watcher could not take) this is
    /// what starts the `CLOSE_WAIT` clock.
    pub(crate) fn observed_eof(&self) {
        let old = self.set_flags(Flags::PEER_FIN | Flags::READ_EOF);
        if !old.contains(Flags::PEER_FIN) {
            self.shared().tx.look(self.id());
        }
    }

    /// The application shut down its write half.
    pub(crate) fn observed_local_shutdown(&self) {
        if self.set_flag(Flags::LOCAL_FIN) {
            self.shared().tx.look(self.id());
        }
    }

    /// Woken whenever this connection's state changes (shared with a few others: wake-ups
    /// are checked against the state).
    pub(crate) fn notify(&self) -> &Arc<Notify> {
        self.shared().notify(self.index())
    }

    /// Runs `f` on the socket if the application has not released it yet.
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        self.slot().cell.with_fd(f)
    }

    /// `TCP_INFO`, while the application holds the socket (Linux).
    pub(crate) fn tcp_info(&self) -> Option<TcpInfo> {
        self.with_fd(sys::tcp_info).and_then(Result::ok)
    }

    /// Lets go of the supervisor's reference (or a handle's): the last one puts the slot
    /// back on the free list.
    pub(crate) fn unref(&self) {
        self.shared().table.unref(self.slot(), self.index());
    }

    fn add_ref(&self) {
        self.slot().refs.add();
    }
}

/// A counted reference to a connection: the stream's, and each handle's.
pub(crate) struct ConnRef(Conn);

impl ConnRef {
    /// Adopts a reference already counted (the stream's, made with the slot).
    pub(crate) fn adopt(conn: Conn) -> Self {
        Self(conn)
    }
}

impl std::ops::Deref for ConnRef {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl Clone for ConnRef {
    fn clone(&self) -> Self {
        self.0.add_ref();
        Self(self.0.clone())
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        self.0.unref();
    }
}
