//! One task per listener: holds every connection's deadlines (one timer for all), learns
//! of peer FINs and kernel failures from the kernel's events, and closes connections
//! from outside, whether or not their handlers poll.

mod drain;
mod entry;
mod kernel;
mod linger;
pub(crate) mod report;
mod rules;
pub(crate) mod tx;

pub use report::DrainReport;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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

use crate::conn::{Conn, Flags, Page, PAGE};
use crate::shared::Shared;
use crate::sys::{self, Event, Events};
use drain::Drain;
use entry::{Bits, Clocks, Entry};
use kernel::SWEEP_INTERVAL;
use linger::Lingering;
use tx::{Handover, Msg, Rx};

/// Starts the supervisor of the listener whose state is `shared`, reading `rx`.
///
/// # Errors
///
/// If the kernel's event queue cannot be created (out of descriptors, say).
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn spawn(shared: Arc<Shared>, rx: Rx) -> io::Result<()> {
    let supervisor = Supervisor {
        events: Arc::new(Events::new()?),
        pages: Vec::new(),
        entries: Vec::new(),
        heap: BinaryHeap::new(),
        lingering: HashMap::new(),
        linger_heap: BinaryHeap::new(),
        drain: None,
        tasks: HashMap::new(),
        spans: HashMap::new(),
        unwatched: 0,
        registered: 0,
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

/// A deadline in the heap: when (nanoseconds on the table's clock), which slot, and which
/// of its schedules (items of an older schedule are stale and skipped).
type Due = Reverse<(u64, u32, u32)>;

struct Supervisor {
    shared: Arc<Shared>,
    events: Arc<Events>,
    /// The table's pages, as far as registrations have reached.
    pages: Vec<Arc<Page>>,
    /// What the supervisor keeps per slot, page by page like the table.
    entries: Vec<Box<[Entry; PAGE]>>,
    /// Every connection's next look; lazily deleted.
    heap: BinaryHeap<Due>,
    /// Sockets dropped by their application with data still on its way, kept open until
    /// it is delivered; by their events key.
    lingering: HashMap<u64, Lingering>,
    linger_heap: BinaryHeap<Reverse<(u64, u64)>>,
    drain: Option<Drain>,
    /// Tasks spawned through the library, by slot: aborted when the library closes.
    tasks: HashMap<u32, AbortHandle>,
    /// Each connection's tracing span, made the first time it has something to say.
    spans: HashMap<u32, tracing::Span>,
    /// Connections the kernel watcher could not take; swept instead.
    unwatched: usize,
    /// Registered and not yet released.
    registered: usize,
    listener_open: bool,
}

impl Supervisor {
    async fn run(mut self, mut rx: Rx) {
        let events = self.events.clone();
        let mut batch = Vec::with_capacity(256);
        let mut armed: Option<Instant> = None;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ends once the listener is gone, its last connection is too, and so is the last
        // lingering close.
        while self.listener_open || self.registered > 0 || !self.lingering.is_empty() {
            let next = self.next_due();
            if next != armed {
                if let Err(e) = events.set_timer(next) {
                    tracing::error!(error = %e, "cannot arm the supervisor's timer");
                }
                armed = next;
            }
            // Unbiased: a flood of accept/release messages must not starve FIN events
            // and the timer. Order does not matter here: a socket is registered with the
            // kernel's events only while its Register message is handled, so its events
            // cannot come first.
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg),
                    None => break,
                },
                result = events.next_batch(&mut batch) => match result {
                    Ok(()) => {
                        let now = Instant::now();
                        let mut timer_fired = false;
                        for event in batch.drain(..) {
                            match event {
                                Event::Timer => timer_fired = true,
                                Event::Socket { key, .. } if self.lingering.contains_key(&key) => {
                                    self.linger_look(key, now);
                                }
                                Event::Socket { key, hangup, error } => {
                                    self.on_socket_event(key, hangup, error, now);
                                }
                            }
                        }
                        if timer_fired {
                            armed = None;
                            self.run_due(now);
                            self.drain_step(now);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the kernel's event queue failed; relying on timers");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sweep.tick(), if sys::NEEDS_SWEEP || self.unwatched > 0 => self.sweep(Instant::now()),
            }
        }
        // The pages refer to the shared state and the shared state to the pages: let go,
        // so that both are freed once the last handle is.
        self.pages.clear();
        self.shared.table.clear();
        tracing::debug!("supervisor done: listener and all connections are gone");
    }

    fn on_msg(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Register(index) => self.register(index, now),
            Msg::LocalFin(index) => {
                if let Some(conn) = self.live(index) {
                    self.local_fin(&conn, now);
                }
            }
            Msg::PeerFin(index) => {
                if let Some(conn) = self.live(index) {
                    self.peer_fin(&conn, now);
                }
            }
            Msg::Wrote(index) => {
                if let Some(conn) = self.live(index) {
                    self.wrote(&conn, now);
                }
            }
            Msg::Receiving(index) => {
                if let Some(conn) = self.live(index) {
                    self.receiving(&conn, now);
                }
            }
            Msg::Released(index, handover) => self.released(index, handover, now),
            Msg::Task(index, gen, task) => self.task(index, gen, task),
            Msg::Close(index, gen, mode, reason) => {
                if let Some(conn) = self.live(index).filter(|c| c.gen() == gen) {
                    self.close_on_request(&conn, mode, reason, now);
                }
            }
            Msg::Drain(request) => self.start_drain(request),
            Msg::ListenerClosed => self.listener_open = false,
        }
    }

    // ------------------------------------------------------------------------------------
    // Slots and entries.

    /// The connection in slot `index` (its page must be known).
    fn conn(&self, index: u32) -> Conn {
        Conn::new(self.pages[index as usize / PAGE].clone(), index)
    }

    fn entry(&self, index: u32) -> &Entry {
        &self.entries[index as usize / PAGE][index as usize % PAGE]
    }

    fn entry_mut(&mut self, index: u32) -> &mut Entry {
        &mut self.entries[index as usize / PAGE][index as usize % PAGE]
    }

    /// Learns of the table's new pages, up to the one of slot `index`.
    fn know_page(&mut self, index: u32) {
        if index as usize / PAGE < self.pages.len() {
            return;
        }
        self.pages = self.shared.table.pages();
        while self.entries.len() < self.pages.len() {
            self.entries
                .push(Box::new(std::array::from_fn(|_| Entry::default())));
        }
    }

    /// The connection in slot `index` if it still needs supervising.
    fn live(&self, index: u32) -> Option<Conn> {
        if index as usize / PAGE >= self.pages.len() {
            return None;
        }
        let entry = self.entry(index);
        if !entry.bits.has(Bits::LIVE) || entry.bits.has(Bits::RETIRED) {
            return None;
        }
        let conn = self.conn(index);
        // Released: its `Released` message is queued and ends the entry.
        (!conn.is_released()).then_some(conn)
    }

    fn register(&mut self, index: u32, now: Instant) {
        self.know_page(index);
        let conn = self.conn(index);
        let config = self.shared.config.clone();
        self.registered += 1;
        let clocks = Clocks::at_accept(&config, &conn, now);
        let entry = self.entry_mut(index);
        entry.open(config.first_byte_timeout().is_some(), clocks);
        // Watched from here rather than in `accept`: a connection closed before the
        // supervisor's next turn costs no epoll_ctl at all. A FIN that came first is
        // reported at once: adding a socket that is already ready queues its event.
        let key = events_key(&conn);
        match conn.with_fd(|fd| self.events.register(fd, key)) {
            Some(Err(e)) => {
                crate::stats::Counters::bump(&self.shared.counters.fin_watch_failures);
                tracing::warn!(parent: &self.span(&conn), error = %e, "cannot watch for FIN; sweeping this connection instead");
                self.entry_mut(index).bits.set(Bits::UNWATCHED);
                self.unwatched += 1;
            }
            Some(Ok(())) => {}
            None => return, // already released: its `Released` message follows
        }
        // The flags may have changed before registration reached us.
        if conn.has(Flags::PEER_FIN) {
            self.peer_fin(&conn, now);
        }
        if conn.has(Flags::LOCAL_FIN) {
            self.local_fin(&conn, now);
        }
        self.reschedule(&conn);
    }

    fn released(&mut self, index: u32, handover: Option<Handover>, now: Instant) {
        let conn = self.conn(index);
        let key = events_key(&conn);
        self.close_wait_over(index, now);
        let entry = std::mem::take(self.entry_mut(index));
        // Old heap items of this slot must never match a later occupant's schedule.
        self.entry_mut(index).sched = entry.sched.wrapping_add(1);
        if entry.bits.has(Bits::UNWATCHED) {
            self.unwatched -= 1;
        }
        if let Some(drain) = self.drain.as_mut() {
            if entry.bits.has(Bits::IN_DRAIN) && drain.count_released(entry.bits.fate()) {
                self.finish_drain();
            }
        }
        self.tasks.remove(&index);
        self.spans.remove(&index);
        self.registered -= 1;
        if let Some(handover) = handover {
            self.linger(key, handover, now);
        }
        conn.unref();
    }

    fn task(&mut self, index: u32, gen: u32, task: AbortHandle) {
        let Some(conn) = self.live(index).filter(|c| c.gen() == gen) else {
            // Its connection ended already; the task ends by itself.
            return;
        };
        if conn.has(Flags::CLOSED) {
            // Closed before the task was known: end it now.
            task.abort();
        } else {
            self.tasks.insert(index, task);
        }
    }

    /// Aborts the task serving the connection, if it was spawned through the library.
    fn abort_task(&mut self, index: u32) -> bool {
        self.tasks.remove(&index).map(|t| t.abort()).is_some()
    }

    /// The connection's span: its id and peer on every event about it.
    /// Kept only if a subscriber wants it: with none, a close costs no span and no map entry.
    fn span(&mut self, conn: &Conn) -> tracing::Span {
        if let Some(span) = self.spans.get(&conn.index()) {
            return span.clone();
        }
        let span = tracing::info_span!(parent: None, "tcp_hygiene::conn", id = conn.id(), peer = %conn.peer());
        if !span.is_disabled() {
            self.spans.insert(conn.index(), span.clone());
        }
        span
    }

    /// Nothing left to enforce; the entry stays until the stream is released (a drain
    /// may still need to end its task).
    fn retire(&mut self, index: u32) {
        let entry = self.entry_mut(index);
        entry.bits.set(Bits::RETIRED);
        entry.sched = entry.sched.wrapping_add(1);
    }

    // ------------------------------------------------------------------------------------
    // Scheduling: one heap of deadlines, one timer.

    fn next_due(&mut self) -> Option<Instant> {
        let drain = self.drain.as_ref().map(Drain::next_step);
        let conn = self.next_conn_due();
        let linger = self.next_linger_due();
        [conn, linger, drain].into_iter().flatten().min()
    }

    fn next_conn_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, index, sched))) = self.heap.peek().copied() {
            if self.is_current(index, sched) {
                return Some(self.shared.table.instant(at));
            }
            self.heap.pop();
        }
        None
    }

    fn is_current(&self, index: u32, sched: u32) -> bool {
        let entry = self.entry(index);
        entry.sched == sched && entry.bits.has(Bits::LIVE) && !entry.bits.has(Bits::RETIRED)
    }

    /// Sets the connection's next look (none: `None`).
    fn schedule(&mut self, index: u32, at: Option<Instant>) {
        let entry = self.entry_mut(index);
        if entry.bits.has(Bits::RETIRED) {
            return;
        }
        entry.sched = entry.sched.wrapping_add(1);
        let sched = entry.sched;
        if let Some(at) = at {
            let at = self.shared.table.nanos(at);
            self.heap.push(Reverse((at, index, sched)));
        }
        // Rescheduling leaves the old item behind (deleted lazily when it reaches the
        // top). Far-off items (say `max_connection_age`) of connections long gone would
        // pile up with churn, so rebuild from the current items now and then: amortised
        // O(1) per push.
        if self.heap.len() > 2 * self.registered + 64 {
            let heap = std::mem::take(&mut self.heap);
            self.heap = heap
                .into_iter()
                .filter(|Reverse((_, index, sched))| self.is_current(*index, *sched))
                .collect();
        }
    }

    fn run_due(&mut self, now: Instant) {
        let now_ns = self.shared.table.nanos(now);
        while let Some(Reverse((at, index, sched))) = self.heap.peek().copied() {
            if at > now_ns {
                break;
            }
            self.heap.pop();
            if self.is_current(index, sched) {
                self.check(index, now);
            }
        }
        self.run_due_lingering(now);
    }
}

/// The key a connection's socket is registered under with the kernel's events: its
/// generation and slot, so that an event for an earlier occupant of the slot is never
/// taken for the current one's.
fn events_key(conn: &Conn) -> u64 {
    conn.id()
}
