//! The application is done with a stream: what must happen before its descriptor closes
//! so that the close stays graceful and bounded.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{word, Conn, Flags};
use crate::mailbox::Handover;
use crate::observe::ConnectionEventKind;
use crate::state::CloseReason;
use crate::sys;
use crate::tcp_info::KernelState;

/// The most sockets one listener keeps open after their application dropped them, to
/// deliver what is still queued; past it, closes are left to the kernel's orphan
/// handling, bounded by `TCP_USER_TIMEOUT` and `TCP_LINGER2`.
const MAX_LINGERING: usize = 4096;

impl Conn {
    /// The application is done with the descriptor: it dropped the stream (`closing`,
    /// the descriptor closes right after this returns) or took the tokio stream back.
    /// Must run before the descriptor is closed.
    pub(crate) fn release(&self, closing: bool) {
        if self.is_released() {
            return;
        }
        let mut handover = {
            // Whatever happens in here (a panicking metrics recorder or tracing
            // subscriber included), the descriptor is forgotten before the caller closes
            // it: the supervisor must never borrow a descriptor number that the kernel may
            // hand to another socket.
            let _forget = ForgetOnDrop(self);
            self.failed_before_release();
            if closing {
                self.with_fd(|fd| self.before_close(fd)).flatten()
            } else {
                None
            }
        };
        let old = word::flags(self.slot().cell.fetch_or(Flags::RELEASED.bits().into()));
        if old.contains(Flags::RELEASED) {
            if handover.take().is_some() {
                self.shared().lingering.fetch_sub(1, Relaxed);
            }
            return;
        }
        let shared = self.shared();
        shared.counters.leave_state(old.state());
        shared.counters.released(|| self.accepted_at().elapsed());
        // How a connection the library did not close ended (who closed first); counted
        // now, or, if a lingering close takes over, when it ends, unless it ends in a
        // reset: each connection is counted once.
        let ending = (!old.contains(Flags::CLOSED)).then(|| old.contains(Flags::PEER_FIN));
        match handover.as_mut() {
            Some(handover) => handover.ending = ending,
            None => {
                if let Some(peer_first) = ending {
                    shared.counters.ended(peer_first);
                }
            }
        }
        self.event(ConnectionEventKind::Released);
        shared.tx.released(self.id(), handover);
        shared.on_release(self.peer().ip());
        self.notify().notify_waiters();
        self.wake_reader();
    }

    /// The application saw the kernel end the connection (a reset, a timeout) and is
    /// dropping it before the supervisor looked: the failure is counted all the same, so
    /// that the reasons do not depend on who saw it first.
    fn failed_before_release(&self) {
        let Some(errno) = self.app_errno().filter(|e| *e != libc::EPIPE) else {
            return;
        };
        if self.has(Flags::CLOSED) {
            return;
        }
        let info = self.tcp_info();
        if info.is_some_and(|i| i.state != KernelState::Close) {
            return; // the connection is not over in the kernel: not a failure
        }
        let local_fin = self.has(Flags::LOCAL_FIN);
        let written = self.bytes_written();
        if let Some(reason) = CloseReason::of_kernel_end(Some(errno), info, written, local_fin) {
            self.mark_closed(reason);
        }
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
        let config = &self.shared().config;
        if config.linger() == Some(Duration::ZERO) {
            return None; // the user asked for a reset on close
        }
        let flags = self.flags();
        if flags.contains(Flags::READ_EOF) && config.write_idle_timeout().is_none() {
            return None; // the usual end: the peer closed first and we read it all
        }
        let info = sys::tcp_info(fd).ok();
        if info.is_some_and(|i| i.state == KernelState::Close) {
            return None; // over already (reset, timed out, or both FINs exchanged)
        }
        let peer_done =
            flags.contains(Flags::PEER_FIN) || info.is_some_and(|i| i.state.peer_fin_received());
        if !flags.contains(Flags::READ_EOF) {
            let read = self.bytes_read();
            let unread = info.map_or(true, |i| i.bytes_received > read + u64::from(peer_done));
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
            if let Some(handover) = self.hand_over(fd) {
                return Some(handover);
            }
        }
        if !peer_done {
            if let Some(t) = config.fin_wait_timeout() {
                let _ = sys::set_orphan_fin_wait(fd, t);
            }
        }
        if pending != Some(false) {
            if let Some(w) = config.write_idle_timeout() {
                let bound = config.user_timeout().map_or(w, |u| u.min(w));
                let _ = sys::set_user_timeout(&socket2::SockRef::from(&fd), bound);
            }
        }
        None
    }

    fn hand_over(&self, fd: BorrowedFd<'_>) -> Option<Handover> {
        let lingering = &self.shared().lingering;
        if lingering.fetch_add(1, Relaxed) >= MAX_LINGERING {
            lingering.fetch_sub(1, Relaxed);
            return None;
        }
        match fd.try_clone_to_owned() {
            Ok(fd) => Some(Handover { fd, ending: None }),
            Err(error) => {
                lingering.fetch_sub(1, Relaxed);
                tracing::debug!(id = %self.id(), %error, "cannot keep the socket for a lingering close");
                None
            }
        }
    }
}

/// Forgets the connection's descriptor when dropped, also while unwinding.
struct ForgetOnDrop<'a>(&'a Conn);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.slot().cell.forget_fd();
    }
}
