//! What a listener shares with its connections and its supervisor: the configuration,
//! the counters, the supervisor's mailbox, the table of connections, and the limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{
    AtomicBool, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    Ordering::SeqCst,
};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::conn::table::Table;
use crate::mailbox::Tx;
use crate::stats::Counters;
use crate::sys::SocketCell;

/// State changes wake waiters through one of these, chosen by slot: a waiter wakes for
/// its own connection's changes and those of a few others (it checks its own state), and
/// a connection nobody waits on costs no notifier of its own.
const NOTIFY_SHARDS: usize = 64;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) tx: Tx,
    pub(crate) table: Table,
    /// Cancelled when a drain starts; handlers wait on it through
    /// `ConnectionHandle::draining`.
    pub(crate) drain: CancellationToken,
    /// Set just before `drain` is cancelled: what the hot paths read (the token's own
    /// check takes a lock).
    draining: AtomicBool,
    /// Set as a drain begins, before the supervisor hears of it: accepts stop handing out
    /// connections (see [`admission_closed`](Self::admission_closed)).
    admission_closed: AtomicBool,
    /// Sockets handed to the supervisor for a lingering close and not closed yet.
    pub(crate) lingering: AtomicUsize,
    /// A framework serve owns the connections: it winds each down at its age, and the
    /// library's close waits for `max_connection_age_grace`.
    pub(crate) served: std::sync::atomic::AtomicBool,
    /// The listening socket, for a drain started elsewhere than on the listener (a
    /// [`Controller`](crate::Controller)): it stops listening.
    pub(crate) listening: SocketCell,
    /// Connections whose stream is still held.
    open: AtomicUsize,
    /// Woken whenever a stream is released (a slot frees up, a descriptor too).
    released: Notify,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    notify: Box<[Arc<Notify>]>,
}

impl Shared {
    /// The shared state of a listener whose metrics carry the label `listener`.
    pub(crate) fn new(config: Config, tx: Tx, listener: &str) -> Self {
        Self {
            config,
            counters: Counters::new(listener),
            tx,
            table: Table::new(),
            drain: CancellationToken::new(),
            draining: AtomicBool::new(false),
            admission_closed: AtomicBool::new(false),
            lingering: AtomicUsize::new(0),
            served: std::sync::atomic::AtomicBool::new(false),
            listening: SocketCell::new(),
            open: AtomicUsize::new(0),
            released: Notify::new(),
            per_ip: Mutex::new(HashMap::new()),
            notify: (0..NOTIFY_SHARDS)
                .map(|_| Arc::new(Notify::new()))
                .collect(),
        }
    }

    /// The notifier of slot `index`.
    pub(crate) fn notify(&self, index: u32) -> &Arc<Notify> {
        &self.notify[index as usize % NOTIFY_SHARDS]
    }

    /// Connections whose stream is still held, or admitted and on their way to the
    /// supervisor. (Sequentially consistent with [`admit`](Self::admit) and
    /// [`admission_closed`](Self::admission_closed): see there.)
    pub(crate) fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// Whether a drain has begun, for an accept that has just admitted a connection.
    ///
    /// A drain with no connection finishes at once, unless [`open`](Self::open) says a
    /// connection was admitted whose registration is still on its way (it then joins the
    /// drain). An accept that passed its is-draining check before the drain began may
    /// admit its connection after the supervisor looked: so the accept counts it open
    /// first, then reads this flag, which the drain sets before the supervisor hears of
    /// it, all sequentially consistent. Either the supervisor sees the connection (it
    /// waits for it), or the accept sees the flag (it closes the connection instead of
    /// handing it out; the drain then ends at its hard deadline at the latest).
    pub(crate) fn admission_closed(&self) -> bool {
        self.admission_closed.load(SeqCst)
    }

    /// Counts a new connection from `ip`; false if that address is at its limit.
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        if let Some(limit) = self.config.max_connections_per_ip() {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= limit {
                return false;
            }
            *n += 1;
        }
        self.open.fetch_add(1, SeqCst);
        true
    }

    pub(crate) fn on_release(&self, ip: IpAddr) {
        if self.config.max_connections_per_ip().is_some() {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Relaxed);
        self.released.notify_waiters();
    }

    /// Resolves after the next release; enable it before checking the condition it waits
    /// for, as with any `Notified`.
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Starts a drain: wakes every handler waiting on `ConnectionHandle::draining`, and
    /// asks the supervisor to end the connections by the deadlines.
    pub(crate) fn start_drain(
        &self,
        soft: std::time::Duration,
        hard: std::time::Duration,
        half_close: bool,
    ) -> tokio::sync::oneshot::Receiver<crate::stats::DrainReport> {
        // Accepts stop first (see `admission_closed`); then the supervisor counts the
        // connections: the ones the signal makes close at once (idle keep-alive
        // connections under a serve) count as finished.
        self.admission_closed.store(true, SeqCst);
        let report = self.tx.drain(soft, hard, half_close);
        self.draining.store(true, Release);
        self.drain.cancel();
        if let Err(e) = self.check_supervisor() {
            tracing::error!(error = %e, "drain: nothing will be enforced");
        }
        report
    }

    /// Whether a drain has started: one atomic load.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Acquire)
    }

    /// Resolves once a drain has started, for a task that polls it with everything else
    /// it waits on (a serve's connection task, woken by every request): see
    /// [`DrainStarted`].
    #[cfg(feature = "hyper")]
    pub(crate) fn drain_started(&self) -> DrainStarted<'_> {
        DrainStarted {
            draining: &self.draining,
            cancelled: self.drain.cancelled(),
            registered: None,
        }
    }

    /// Makes the listening socket stop listening (queued connections are reset, new ones
    /// refused), while the listener itself may still be in someone's hands.
    pub(crate) fn stop_listening(&self) {
        let _ = self
            .listening
            .with_fd(|fd| socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read));
    }

    /// An error for `accept` if the supervisor has stopped (only a bug can do that).
    pub(crate) fn check_supervisor(&self) -> std::io::Result<()> {
        if self.counters.supervisor_failed.load(Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Other,
                "tcp-hygiene: the supervisor task stopped; connections would not be supervised",
            ));
        }
        Ok(())
    }
}

#[cfg(feature = "hyper")]
pub(crate) use drain_started::DrainStarted;

#[cfg(feature = "hyper")]
mod drain_started {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering::Acquire};
    use std::task::{Context, Poll, Waker};

    use tokio_util::sync::WaitForCancellationFuture;

    /// Resolves once a drain has started. The first poll registers the task's waker with the
    /// drain's token (whose cancellation wakes it); later polls cost one atomic load while
    /// the task's waker is the one registered, instead of the token's lock and its notifier's
    /// (a serve's connection task polls this with every request). A new waker is registered
    /// again.
    #[pin_project::pin_project]
    pub(crate) struct DrainStarted<'a> {
        pub(super) draining: &'a AtomicBool,
        #[pin]
        pub(super) cancelled: WaitForCancellationFuture<'a>,
        pub(super) registered: Option<Waker>,
    }

    impl Future for DrainStarted<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.project();
            if this.draining.load(Acquire) {
                return Poll::Ready(());
            }
            // `draining` is set before the token is cancelled, and the cancellation wakes the
            // waker registered below: a drain that starts after the load above still wakes
            // this task, which then sees the flag.
            if this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                return Poll::Pending;
            }
            match this.cancelled.poll(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => {
                    *this.registered = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}
