//! The lingering close: a socket whose application dropped it while data was still on
//! its way to the peer stays open in the supervisor until that data is delivered.
//!
//! Closed at once, the socket would be an orphan, and Linux resets an orphan as soon as
//! the peer sends it anything (RFC 1122), dropping whatever was still queued: an HTTP/2
//! client's WINDOW_UPDATE or PING after the server's last DATA frames is enough to lose
//! the end of a response. Held open, the socket takes such bytes (they are read and
//! discarded), and is closed once everything we sent is acknowledged, or when the peer
//! has sent its FIN and will send nothing more. `write_idle_timeout` and
//! `fin_wait_timeout` bound it: a peer that stops acknowledging is reset.

use std::cmp::Reverse;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{Handover, Supervisor};
use crate::idle::{later, IdleClock, Verdict};
use crate::state::CloseReason;
use crate::sys;
use crate::tcp_info::KernelState;

/// The first look comes this soon after the handover, and again whenever the peer has
/// acknowledged something since the last one.
const FIRST_STEP: Duration = Duration::from_millis(10);
/// Looks at a socket whose peer acknowledges nothing back off to this.
const MAX_STEP: Duration = Duration::from_secs(1);

pub(super) struct Lingering {
    fd: OwnedFd,
    pub(super) due: Instant,
    step: Duration,
    acked: u64,
    /// Bounds on a peer that stops acknowledging.
    write_idle: Option<IdleClock>,
    fin_wait: Option<IdleClock>,
}

impl Supervisor {
    /// Takes over a socket its application has dropped with data still queued; `id` is
    /// the key its events keep coming under (its registration outlives the application's
    /// descriptor, since ours still holds the socket open).
    pub(super) fn linger(&mut self, id: u64, handover: Handover, now: Instant) {
        let Handover { fd, fin_sent } = handover;
        if !fin_sent {
            // The application dropped it without a shutdown; its close sent nothing,
            // since we hold the socket open.
            let _ = SockRef::from(&fd).shutdown(Shutdown::Write);
        }
        let acked = sys::tcp_info(fd.as_fd()).map_or(0, |i| i.bytes_acked);
        let config = &self.shared.config;
        let clock = |t: Option<Duration>| t.map(|t| IdleClock::new(t, acked, now));
        let lingering = Lingering {
            fd,
            due: now,
            step: FIRST_STEP,
            acked,
            write_idle: clock(config.write_idle_timeout()),
            fin_wait: clock(config.fin_wait_timeout()),
        };
        tracing::debug!(
            id,
            "lingering close: delivering what the application left queued"
        );
        self.lingering.insert(id, lingering);
        self.linger_look(id, now);
    }

    /// Looks at a lingering socket: closes it once its data is delivered, resets it if
    /// the peer stopped acknowledging, schedules the next look otherwise.
    pub(super) fn linger_look(&mut self, id: u64, now: Instant) {
        let Some(l) = self.lingering.get_mut(&id) else {
            return;
        };
        let fd = l.fd.as_fd();
        // Whatever the peer sent is read and dropped: unread data would turn the final
        // close into a reset.
        let _ = sys::discard_unread(fd);
        let info = match sys::tcp_info(fd) {
            Ok(info) => info,
            // No kernel counters (not Linux): nothing to wait for.
            Err(_) => return self.end_linger(id, "no TCP_INFO"),
        };
        if info.state == KernelState::Close {
            return self.end_linger(id, "over");
        }
        if info.state.peer_fin_received() {
            // The peer will send nothing more: an orphan delivers the rest safely.
            return self.end_linger(id, "peer closed");
        }
        if !info.has_pending_send() {
            // Everything delivered, our FIN too: the orphan waits in FIN_WAIT_2 for the
            // peer's FIN, bounded by `fin_wait_timeout`.
            if let Some(t) = self.shared.config.fin_wait_timeout() {
                let _ = sys::set_orphan_fin_wait(fd, t);
            }
            return self.end_linger(id, "delivered");
        }
        let mut expired = None;
        let mut next = later(now, l.step);
        for (clock, reason) in [
            (&mut l.write_idle, CloseReason::WriteIdleTimeout),
            (&mut l.fin_wait, CloseReason::FinWaitTimeout),
        ] {
            if let Some(clock) = clock {
                match clock.check(info.bytes_acked, now) {
                    Verdict::Expired => expired = expired.or(Some(reason)),
                    Verdict::CheckAt(at) => next = next.min(at),
                }
            }
        }
        if let Some(reason) = expired {
            // The peer stopped taking data: nothing more can be delivered.
            let _ = sys::disconnect(fd);
            self.shared.counters.closed(reason);
            tracing::info!(id, reason = %reason, "lingering close: reset, the peer stopped taking data");
            return self.end_linger(id, "reset");
        }
        if info.bytes_acked != l.acked {
            l.acked = info.bytes_acked;
            l.step = FIRST_STEP;
        } else {
            l.step = (l.step * 2).min(MAX_STEP);
        }
        l.due = next;
        let at = self.shared.table.nanos(next);
        self.linger_heap.push(Reverse((at, id)));
    }

    fn end_linger(&mut self, id: u64, how: &'static str) {
        if self.lingering.remove(&id).is_some() {
            self.shared.lingering.fetch_sub(1, Relaxed);
            tracing::debug!(id, how, "lingering close: done");
        }
    }

    pub(super) fn next_linger_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.linger_heap.peek().copied() {
            let due = self
                .lingering
                .get(&id)
                .map(|l| self.shared.table.nanos(l.due));
            if due == Some(at) {
                return Some(self.shared.table.instant(at));
            }
            self.linger_heap.pop();
        }
        None
    }

    pub(super) fn run_due_lingering(&mut self, now: Instant) {
        let now_ns = self.shared.table.nanos(now);
        while let Some(Reverse((at, id))) = self.linger_heap.peek().copied() {
            if at > now_ns {
                break;
            }
            self.linger_heap.pop();
            let due = self
                .lingering
                .get(&id)
                .map(|l| self.shared.table.nanos(l.due));
            if due == Some(at) {
                self.linger_look(id, now);
            }
        }
    }
}
