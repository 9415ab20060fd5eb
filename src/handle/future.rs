//! The futures of [`ConnectionHandle`](super::ConnectionHandle): named types, so that
//! they can be stored, and each costs nothing until it is polled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::conn::{Conn, ConnRef};
use crate::rules::{nanos, ReadIdleClock, Verdict};

/// Future of [`ConnectionHandle::peer_closed`](super::ConnectionHandle::peer_closed).
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct PeerClosed {
    conn: ConnRef,
    done: fn(&Conn) -> bool,
    #[pin]
    notified: OwnedNotified,
}

impl PeerClosed {
    pub(super) fn new(conn: ConnRef, done: fn(&Conn) -> bool) -> Self {
        let notified = conn.notify().clone().notified_owned();
        Self {
            conn,
            done,
            notified,
        }
    }
}

impl Future for PeerClosed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            // Registered before the check, so that a change after it is not missed.
            this.notified.as_mut().enable();
            if (this.done)(this.conn) {
                return Poll::Ready(());
            }
            ready!(this.notified.as_mut().poll(cx));
            // Woken by a change of this or another connection of the same notifier.
            this.notified
                .set(this.conn.notify().clone().notified_owned());
        }
    }
}

impl fmt::Debug for PeerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClosed")
            .field("id", &self.conn.id())
            .finish_non_exhaustive()
    }
}

/// Future of [`ConnectionHandle::read_idle`](super::ConnectionHandle::read_idle).
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ReadIdle {
    conn: ConnRef,
    clock: ReadIdleClock,
    #[pin]
    sleep: Sleep,
}

impl ReadIdle {
    pub(super) fn new(conn: ConnRef, idle: Duration) -> Self {
        let now = Instant::now();
        let clock =
            ReadIdleClock::new(nanos(idle), received(&conn), conn.shared().table.nanos(now));
        Self {
            conn,
            clock,
            sleep: tokio::time::sleep_until(now.into()),
        }
    }
}

/// Bytes received: the application's reads and, on Linux, the kernel's count.
fn received(conn: &ConnRef) -> u64 {
    let kernel = conn.tcp_info().map_or(0, |i| i.bytes_received);
    conn.bytes_read().wrapping_add(kernel)
}

impl Future for ReadIdle {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            let table = &this.conn.shared().table;
            let now = table.nanos(Instant::now());
            let quiet = this.conn.tcp_info().map(|i| nanos(i.since_data_received()));
            match this.clock.check(received(this.conn), quiet, now) {
                Verdict::Expired => return Poll::Ready(()),
                Verdict::CheckAt(at) => this.sleep.as_mut().reset(table.instant(at).into()),
            }
        }
    }
}

impl fmt::Debug for ReadIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadIdle")
            .field("id", &self.conn.id())
            .finish_non_exhaustive()
    }
}

/// Future of [`ConnectionHandle::draining`](super::ConnectionHandle::draining).
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct Draining {
    #[pin]
    cancelled: WaitForCancellationFutureOwned,
}

impl Draining {
    pub(super) fn new(token: CancellationToken) -> Self {
        Self {
            cancelled: token.cancelled_owned(),
        }
    }
}

impl Future for Draining {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().cancelled.poll(cx)
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining").finish_non_exhaustive()
    }
}
