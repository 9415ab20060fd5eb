//! The lingering close: a socket whose application dropped it while data was still on
//! its way to the peer stays open in the supervisor until that data is delivered.
//!
//! Closed at once, the socket would be an orphan, and Linux resets an orphan as soon as
//! the peer sends it anything (RFC 1122), dropping whatever was still queued: an HTTP/2
//! client's WINDOW_UPDATE or PING after the server's last DATA frames is enough to lose
//! the end of a response. Held open, the socket takes such bytes (they are read and
//! discarded), and is closed once everything we sent is acknowledged. The rules that
//! bound a lingering close are in the rules' table (`write_idle_timeout`,
//! `min_send_rate`, and `fin_wait_timeout` until the peer's FIN): a peer that stops
//! acknowledging is reset. There is no kernel event for "everything acknowledged", so a
//! lingering socket is also looked at on a backing-off step.

use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use socket2::SockRef;

use crate::mailbox::Handover;
use crate::rules::{Nanos, Sample, MS};
use crate::shared::Shared;
use crate::sys;
use crate::tcp_info::TcpInfo;

use super::slot_map::SlotMap;

/// The first look comes this soon after the handover, and again whenever the peer has
/// acknowledged something since the last one.
const FIRST_STEP: Nanos = 10 * MS;
/// Looks at a socket whose peer acknowledges nothing back off to this.
const MAX_STEP: Nanos = 1_000 * MS;

#[derive(Debug)]
struct Lingering {
    fd: OwnedFd,
    step: Nanos,
    acked: u64,
    /// How the connection ended, to count when the lingering close does (see
    /// [`Handover::ending`]).
    ending: Option<bool>,
}

/// The sockets held for a lingering close, by slot.
#[derive(Debug, Default)]
pub(super) struct Lingerings {
    held: SlotMap<Lingering>,
}

impl Lingerings {
    /// Takes over the socket of slot `index`; our FIN goes out now if the application's
    /// close did not send it (it sent nothing, since we hold the socket open).
    pub(super) fn hold(&mut self, index: u32, handover: Handover) -> bool {
        let Handover { fd, ending } = handover;
        let _ = SockRef::from(&fd).shutdown(Shutdown::Write);
        self.held.insert(
            index,
            Lingering {
                fd,
                step: FIRST_STEP,
                acked: 0,
                ending,
            },
        );
        true
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub(super) fn fd(&self, index: u32) -> Option<BorrowedFd<'_>> {
        self.held.get(&index).map(|l| l.fd.as_fd())
    }

    /// The kernel's view of a lingering socket, after reading and dropping whatever the
    /// peer sent: unread data would turn the final close into a reset.
    pub(super) fn tcp_info(&self, index: u32) -> Option<TcpInfo> {
        let fd = self.fd(index)?;
        let _ = sys::discard_unread(fd);
        sys::tcp_info(fd).ok()
    }

    /// When a lingering socket needs its next look to see whether everything is
    /// delivered: soon while the peer acknowledges, backing off while it does not.
    /// `None` for a slot that is not lingering.
    pub(super) fn next_look(&mut self, index: u32, sample: &Sample, now: Nanos) -> Option<Nanos> {
        // Asked at every look: no hashing while nothing lingers, the usual case.
        if self.held.is_empty() {
            return None;
        }
        let l = self.held.get_mut(&index)?;
        let acked = sample.kernel.map_or(0, |k| k.acked);
        if acked != l.acked {
            l.acked = acked;
            l.step = FIRST_STEP;
        } else {
            l.step = (l.step * 2).min(MAX_STEP);
        }
        Some(now.saturating_add(l.step))
    }

    /// Ends the lingering close of slot `index`: its socket closes. If the peer has not
    /// sent its FIN, the orphan waits for it in `FIN_WAIT_2` at most `fin_wait`. Returns
    /// how the connection ended, to count (see [`Handover::ending`]).
    pub(super) fn end(
        &mut self,
        index: u32,
        fin_wait: Option<Duration>,
        shared: &Shared,
    ) -> Option<Option<bool>> {
        let l = self.held.remove(&index)?;
        if let Some(t) = fin_wait {
            let peer_done = sys::tcp_info(l.fd.as_fd()).is_ok_and(|i| i.state.peer_fin_received());
            if !peer_done {
                let _ = sys::set_orphan_fin_wait(l.fd.as_fd(), t);
            }
        }
        shared.lingering.fetch_sub(1, Relaxed);
        Some(l.ending)
    }
}
