//! One task per listener: the I/O around the rules. It learns of peer FINs and kernel
//! failures from the kernel's events, keeps every connection's next look in one heap
//! with one timer, takes a sample of a connection when something may have changed or a
//! deadline comes, asks the rules ([`crate::rules`]) what to do, and does it: closes from
//! outside, whether or not the handlers poll, ends tasks, holds lingering closes, drains.
//!
//! - `mod.rs`: the task, its loop, and what each message and event means.
//! - `act.rs`: a look and what comes of it (a close, a kernel end, the next deadline).
//! - `slots.rs`: the connections as the supervisor reaches them, and their entries.
//! - `linger.rs`: the sockets held for a lingering close.
//! - `draining.rs`: a running drain and who waits for its report.
//! - `tasks.rs`: the tasks spawned through the library.
//! - `trace.rs`: the connections' spans, and when each `CLOSE_WAIT` began.

mod act;
mod draining;
mod linger;
mod slot_map;
mod slots;
mod tasks;
mod trace;

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::task::AbortHandle;

use crate::conn::Flags;
use crate::id::ConnectionId;
use crate::mailbox::{Handover, Msg, Rx};
use crate::rules::{DeadlineHeap, Limits, Nanos};
use crate::shared::Shared;
use crate::sys::{self, Event, Events, Probe};
use draining::Draining;
use linger::Lingerings;
use slots::Slots;
use tasks::Tasks;
use trace::{CloseWaits, Spans};

/// The most messages handled in one turn of the loop.
const MAX_BATCH: usize = 64;

/// Without kernel events, connections are looked at for a FIN this often.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The shared state of a new listener or connector, with its supervisor started; its
/// metrics carry the label `label`.
///
/// # Errors
///
/// If the kernel's event queue cannot be created (out of descriptors, say).
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn start(config: crate::config::Config, label: &str) -> io::Result<Arc<Shared>> {
    let (tx, rx) = crate::mailbox::channel();
    let shared = Arc::new(Shared::new(config, tx, label));
    spawn(shared.clone(), rx)?;
    Ok(shared)
}

/// Starts the supervisor of the listener or connector whose state is `shared`, reading
/// `rx`.
fn spawn(shared: Arc<Shared>, rx: Rx) -> io::Result<()> {
    let limits = [false, true].map(|served| Limits::of(&shared.config, served));
    let now_ns = shared.table.now_ns();
    let supervisor = Supervisor {
        limits,
        clock: std::cell::Cell::new((shared.table.instant(now_ns), now_ns)),
        events: Arc::new(Events::new()?),
        slots: Slots::new(shared.clone()),
        heap: DeadlineHeap::default(),
        lingering: Lingerings::default(),
        drain: None,
        tasks: Tasks::default(),
        spans: Spans::default(),
        close_waits: CloseWaits::default(),
        unwatched: 0,
        held: 0,
        listener_open: true,
        shared,
    };
    tokio::spawn(async move {
        let shared = supervisor.shared.clone();
        if let Err(panic) = (CatchUnwind {
            inner: supervisor.run(rx),
        })
        .await
        {
            // A bug, never an input: nothing is enforced from here on, so say so loudly
            // and make `accept` fail rather than serve unsupervised connections.
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "tcp-hygiene supervisor stopped: connections are no longer supervised");
            shared.counters.supervisor_failed.store(true, Relaxed);
        }
    });
    Ok(())
}

/// Runs a future and catches a panic in it, so that the task that polls it can report
/// the panic instead of vanishing silently.
#[pin_project]
struct CatchUnwind<F> {
    #[pin]
    inner: F,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    /// The rules' settings, of a listener no framework serve owns and of one it does
    /// (see `Shared::served`): the configuration never changes, so they are worked out
    /// once, not at every look.
    limits: [Limits; 2],
    /// The last instant turned into the rules' clock, and what it gave: a batch's
    /// messages and events share one `now`, and turning it costs more than the clock.
    clock: std::cell::Cell<(Instant, Nanos)>,
    events: Arc<Events>,
    /// The connections and their entries.
    slots: Slots,
    /// Every connection's next look (lingering ones too); lazily deleted.
    heap: DeadlineHeap<u32>,
    /// Sockets dropped by their application with data still on its way.
    lingering: Lingerings,
    drain: Option<Draining>,
    tasks: Tasks,
    spans: Spans,
    close_waits: CloseWaits,
    /// Connections the kernel watcher could not take; swept instead.
    unwatched: usize,
    /// Registered and not yet released by the application.
    held: usize,
    listener_open: bool,
}

impl Supervisor {
    /// Now, read on the rules' clock and remembered for [`now_ns`](Self::now_ns).
    fn now(&self) -> Instant {
        let now_ns = self.shared.table.now_ns();
        let now = self.shared.table.instant(now_ns);
        self.clock.set((now, now_ns));
        now
    }

    /// `now` on the rules' clock (the table's nanoseconds).
    pub(super) fn now_ns(&self, now: Instant) -> Nanos {
        let (at, ns) = self.clock.get();
        if at == now {
            return ns;
        }
        let ns = self.shared.table.nanos(now);
        self.clock.set((now, ns));
        ns
    }

    async fn run(mut self, mut rx: Rx) {
        let events = self.events.clone();
        let mut batch = Vec::with_capacity(256);
        let mut msgs = Vec::with_capacity(MAX_BATCH);
        let mut armed: Option<Nanos> = None;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ends once the listener (or every handle on the connector) is gone, its last
        // connection is too, and so is the last lingering close.
        while self.listener_open || self.held > 0 || !self.lingering.is_empty() {
            let next = self.next_due();
            if next != armed {
                let at = next.map(|n| self.shared.table.instant(n));
                if let Err(e) = events.set_timer(at) {
                    tracing::error!(error = %e, "cannot arm the supervisor's timer");
                }
                armed = next;
            }
            // Unbiased: a flood of accept/release messages must not starve FIN events
            // and the timer. Order does not matter here: a socket is registered with the
            // kernel's events only while its Register message is handled, so its events
            // cannot come first.
            tokio::select! {
                // Whatever waits, in one turn: a burst of connections (each a Register
                // and a Released) costs one wake-up, not one per message. Bounded, so
                // that events and the timer are not starved by a flood.
                n = rx.recv_many(&mut msgs, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = self.now();
                    for msg in msgs.drain(..) {
                        self.on_msg(msg, now);
                    }
                },
                result = events.next_batch(&mut batch) => match result {
                    Ok(()) => {
                        let now = self.now();
                        let mut timer_fired = false;
                        for event in batch.drain(..) {
                            match event {
                                Event::Timer => timer_fired = true,
                                Event::Socket { key, hangup, error } => {
                                    self.on_socket_event(ConnectionId::from(key), hangup, error, now);
                                }
                            }
                        }
                        if timer_fired {
                            armed = None;
                            self.run_due(now);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the kernel's event queue failed; relying on timers");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sweep.tick(), if sys::NEEDS_SWEEP || self.unwatched > 0 => self.sweep(self.now()),
            }
        }
        tracing::debug!("supervisor done: listener and all connections are gone");
    }

    /// Handles `msg`; `now` is when its batch began (a few microseconds at most).
    fn on_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::Register(id) => self.register(id, now),
            Msg::Look(id) => {
                if let Some(index) = self.slots.supervised(id) {
                    self.look(index, now);
                }
            }
            Msg::Wrote(id) => {
                if let Some(index) = self.slots.supervised(id) {
                    self.wrote(index, now);
                }
            }
            Msg::Released(id, handover) => self.released(id, handover, now),
            Msg::Task(id, task) => self.task(id, task),
            Msg::Close(id, mode, reason) => {
                if let Some(index) = self.slots.supervised(id) {
                    self.close_on_request(index, mode, reason, now);
                }
            }
            #[cfg(feature = "tls")]
            Msg::OwnerCloses(id) => {
                if let Some(index) = self.slots.supervised(id) {
                    self.slots.watch_mut(index).set_owner_closes();
                }
            }
            Msg::Drain(request) => self.start_drain(request, now),
            Msg::ListenerClosed => self.listener_open = false,
        }
    }

    fn register(&mut self, id: ConnectionId, now: Instant) {
        let index = id.slot();
        let conn = self.slots.open(index);
        self.held += 1;
        if let Some(draining) = self.drain.as_mut() {
            // Accepted while the drain started: it is part of it all the same.
            draining.drain.join();
            self.slots.watch_mut(index).join_drain();
        }
        // Watched from here rather than in `accept`: a connection closed before the
        // supervisor's next turn costs no epoll_ctl at all. A FIN that came first is
        // reported at once: adding a socket that is already ready queues its event.
        match conn.with_fd(|fd| self.events.register(fd, id.as_u64())) {
            Some(Err(e)) => {
                crate::stats::Counters::bump(&self.shared.counters.fin_watch_failures);
                tracing::warn!(parent: &self.spans.of(&conn), error = %e, "cannot watch for FIN; sweeping this connection instead");
                self.slots.watch_mut(index).set_unwatched();
                self.unwatched += 1;
            }
            Some(Ok(())) => {}
            None => return, // already released: its `Released` message follows
        }
        self.first_look(index, now);
    }

    fn released(&mut self, id: ConnectionId, handover: Option<Handover>, now: Instant) {
        let index = id.slot();
        if !self.slots.is_live(index) {
            return;
        }
        let conn = self.slots.conn(index);
        let now_ns = self.now_ns(now);
        self.close_waits.over(index, now_ns, &self.shared);
        if self.slots.watch(index).is_unwatched() {
            self.unwatched -= 1;
        }
        let lingering = match handover {
            Some(handover) => self.lingering.hold(index, handover),
            None => false,
        };
        let fate = self.slots.watch_mut(index).released(lingering);
        if let Some(fate) = fate {
            self.count_in_drain(fate);
        }
        self.tasks.forget(index);
        self.held -= 1;
        if lingering {
            tracing::debug!(id = %conn.id(), "lingering close: delivering what the application left queued");
            self.look(index, now);
        } else {
            self.spans.forget(index);
            self.slots.free(index);
        }
    }

    fn task(&mut self, id: ConnectionId, task: AbortHandle) {
        // Its connection ended and its stream is gone already: the task ends by itself.
        let Some(index) = self.slots.held(id) else {
            return;
        };
        if self.slots.watch_mut(index).task_known() {
            // Ended before the task was known: end it now.
            task.abort();
        } else {
            self.tasks.keep(index, task);
        }
    }

    /// The next deadline: a connection's, or the drain's.
    fn next_due(&mut self) -> Option<Nanos> {
        let slots = &self.slots;
        let conn = self
            .heap
            .next(|index, sched| slots.is_current(index, sched));
        let drain = self.drain.as_ref().map(|d| d.drain.next_step());
        conn.into_iter().chain(drain).min()
    }

    fn run_due(&mut self, now: Instant) {
        let now_ns = self.now_ns(now);
        loop {
            let slots = &self.slots;
            let Some(index) = self.heap.pop_due(now_ns, |i, s| slots.is_current(i, s)) else {
                break;
            };
            self.look(index, now);
        }
        self.drain_step(now);
    }

    /// The application wrote while watched: a look within the rules' pause, beside any
    /// already scheduled (an earlier one stands; whichever comes first reschedules).
    fn wrote(&mut self, index: u32, now: Instant) {
        let at = self
            .now_ns(now)
            .saturating_add(self.limits().write_watch_pause());
        let sched = {
            let mut watch = self.slots.watch_mut(index);
            watch.wrote();
            watch.sched
        };
        let keys = self.held + self.lingering.len();
        let slots = &self.slots;
        self.heap
            .push(at, index, sched, keys, |i, s| slots.is_current(i, s));
    }

    /// Sets the connection's next look (none: `None`).
    fn schedule(&mut self, index: u32, at: Option<Nanos>) {
        let sched = self.slots.reschedule(index);
        if let Some(at) = at {
            let keys = self.held + self.lingering.len();
            let slots = &self.slots;
            self.heap
                .push(at, index, sched, keys, |i, s| slots.is_current(i, s));
        }
    }

    /// An event for the socket registered as `id`: a FIN (read hang-up), a hang-up of
    /// both directions, or an error.
    fn on_socket_event(&mut self, id: ConnectionId, hangup: bool, error: bool, now: Instant) {
        let Some(index) = self.slots.watched(id) else {
            return;
        };
        if self.slots.watch(index).is_lingering() {
            self.look(index, now);
            return;
        }
        let conn = self.slots.conn(index);
        let info = conn.tcp_info();
        let kernel_closed = info.is_some_and(|i| i.state == crate::tcp_info::KernelState::Close);
        if error || (hangup && kernel_closed) {
            self.kernel_ended(index, info, None, now);
        } else if info.map_or(true, |i| i.state.peer_fin_received()) {
            if let Some(info) = info.filter(|_| !conn.has(Flags::PEER_FIN)) {
                // The FIN's arrival is the peer's last acknowledgement (a FIN carries
                // one, and a peer that has closed sends nothing else unprompted).
                let took = Duration::from_millis(info.last_ack_recv_ms.into());
                self.shared.counters.fin_detected(took);
            }
            conn.set_flag(Flags::PEER_FIN);
            self.look(index, now);
        }
    }

    /// Looks at the connections the kernel watcher does not cover (all of them on
    /// platforms without kernel FIN events) for a FIN or a failure.
    fn sweep(&mut self, now: Instant) {
        for index in self.slots.swept() {
            let conn = self.slots.conn(index);
            if conn.has(Flags::PEER_FIN) {
                continue;
            }
            match conn.with_fd(sys::probe) {
                Some(Probe::PeerFin) => {
                    conn.set_flag(Flags::PEER_FIN);
                    self.look(index, now);
                }
                Some(Probe::Ended(errno)) => {
                    let info = conn.tcp_info();
                    self.kernel_ended(index, info, errno, now);
                }
                Some(Probe::Open) | None => {}
            }
        }
    }
}

impl Drop for Supervisor {
    /// The pages refer to the shared state and the shared state to the pages: let go,
    /// so that both are freed once the last stream and handle are, also when the runtime
    /// shuts down with the listener still alive (the task is dropped, never finished).
    fn drop(&mut self) {
        if self.listener_open {
            self.shared.counters.supervisor_failed.store(true, Relaxed);
        }
        self.slots.clear();
        self.shared.table.clear();
    }
}
