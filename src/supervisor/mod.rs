//! One task per listener: holds every connection's deadlines (one timer for all), learns
//! of peer FINs and kernel failures from the FIN watcher, and closes connections from
//! outside, whether or not their handlers poll.

mod drain;
mod kernel;
mod linger;
mod rules;

pub(crate) use drain::DrainRequest;
use drain::{Drain, Fate};
use kernel::SWEEP_INTERVAL;
use linger::Lingering;
use rules::Clocks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::sync::{mpsc, Notify};

use crate::config::Config;
use crate::conn::Conn;
use crate::idle::IdleClock;
use crate::state::flags;
use crate::stats::Counters;
use crate::sys::{self, FinWatcher};

/// Messages from listeners and streams to the supervisor.
#[derive(Debug)]
pub(crate) enum Msg {
    Register(u64, Weak<Conn>),
    LocalFin(u64),
    /// The application read EOF (the watcher may not have seen the FIN).
    PeerFin(u64),
    /// The application is done with the stream; with a socket to close for it, if data
    /// was still on its way.
    Released(u64, Option<Handover>),
    Drain(DrainRequest),
}

/// A socket whose application dropped it while data was still on its way to the peer:
/// the supervisor keeps it open until that data is delivered (a lingering close).
#[derive(Debug)]
pub(crate) struct Handover {
    /// A duplicate of the application's descriptor, taken before it closed its own.
    pub(crate) fd: OwnedFd,
    /// Whether our FIN was already sent (the application shut down its write half, or
    /// the library closed the connection).
    pub(crate) fin_sent: bool,
}

/// State shared by a listener, its connections and its supervisor. When the last holder
/// (listener or connection) drops it, the channel closes and the supervisor ends.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    next_id: AtomicU64,
    /// Connections whose stream is still held.
    pub(crate) open: AtomicUsize,
    /// Woken whenever a stream is released (a slot frees up, a descriptor too).
    pub(crate) released: Notify,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Set when a drain starts; handlers wait on it through `ConnectionHandle::draining`.
    pub(crate) draining: AtomicBool,
    pub(crate) drain_started: Notify,
    /// Sockets handed to the supervisor for a lingering close and not closed yet.
    pub(crate) lingering: Arc<AtomicUsize>,
}

impl Shared {
    /// Creates the shared state and spawns the supervisor task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn start(config: Config) -> std::io::Result<Arc<Self>> {
        let watcher = Arc::new(FinWatcher::new()?);
        let counters = Arc::new(Counters::default());
        let lingering = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            config: config.clone(),
            counters: counters.clone(),
            watcher: watcher.clone(),
            conns: HashMap::new(),
            lingering: HashMap::new(),
            lingering_count: lingering.clone(),
            heap: BinaryHeap::new(),
            drain: None,
            unwatched: 0,
        };
        let health = counters.clone();
        tokio::spawn(async move {
            if let Err(panic) = (CatchUnwind {
                inner: supervisor.run(rx),
            })
            .await
            {
                // A bug, never an input: nothing is enforced from here on, so say so
                // loudly and make `accept` fail rather than serve unsupervised.
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %message, "tcp-hygiene supervisor stopped: connections are no longer supervised");
                health.supervisor_failed.store(true, Relaxed);
            }
        });
        Ok(Arc::new(Self {
            config,
            counters,
            tx,
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            released: Notify::new(),
            per_ip: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            drain_started: Notify::new(),
            lingering,
        }))
    }

    /// An error for `accept` if the supervisor has stopped (only a bug can do that).
    pub(crate) fn check_supervisor(&self) -> std::io::Result<()> {
        if self.counters.supervisor_failed.load(Relaxed) {
            return Err(std::io::Error::other(
                "tcp-hygiene: the supervisor task stopped; connections would not be supervised",
            ));
        }
        Ok(())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Counts a new connection from `ip`; false if that address is at its limit.
    pub(crate) fn admit(&self, ip: IpAddr) -> bool {
        if let Some(limit) = self.config.inner.max_connections_per_ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= limit {
                return false;
            }
            *n += 1;
        }
        self.open.fetch_add(1, Relaxed);
        true
    }

    pub(crate) fn on_release(&self, ip: IpAddr) {
        if self.config.inner.max_connections_per_ip.is_some() {
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
    config: Config,
    counters: Arc<Counters>,
    watcher: Arc<FinWatcher>,
    conns: HashMap<u64, Entry>,
    /// Sockets dropped by their application with data still on its way, kept open until
    /// it is delivered.
    lingering: HashMap<u64, Lingering>,
    lingering_count: Arc<AtomicUsize>,
    /// Lazily deleted: an item is live only if it matches its entry's `due`.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    drain: Option<Drain>,
    /// Connections the kernel watcher could not take; swept instead.
    unwatched: usize,
}

/// What the supervisor keeps per connection.
struct Entry {
    conn: Weak<Conn>,
    due: Option<Instant>,
    first_byte_pending: bool,
    /// Boxed: most connections run none of these clocks (all off by default, and
    /// `close_wait` and `fin_wait` only after a FIN), and unboxed they would be most of
    /// the entry.
    clocks: Option<Box<Clocks>>,
    /// No rule applies any more (reset, or both FINs exchanged).
    retired: bool,
    /// The library has closed it gracefully: only the rules that bound our FIN's way out
    /// (`fin_wait_timeout`, `write_idle_timeout`) still apply.
    closed_by_us: bool,
    /// Registered with the kernel watcher (otherwise swept).
    watched: bool,
    /// What a drain did to this connection.
    fate: Fate,
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let watcher = self.watcher.clone();
        let mut events = Vec::with_capacity(256);
        let mut armed: Option<Instant> = None;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Open while the listener or a stream is alive; after that, until the last
        // lingering close is done.
        let mut open = true;
        loop {
            if !open && self.lingering.is_empty() {
                break;
            }
            let next = self.next_due();
            if next != armed {
                if let Err(e) = watcher.set_timer(next) {
                    tracing::error!(error = %e, "cannot arm the supervisor's timer");
                }
                armed = next;
            }
            // Unbiased: a flood of accept/release messages must not starve FIN events
            // and the timer. Order does not matter here: a socket is registered with the
            // watcher only while its Register message is handled, so its events cannot
            // come first.
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(msg) => self.on_msg(msg),
                    None => open = false,
                },
                result = watcher.next_batch(&mut events) => match result {
                    Ok(()) => {
                        let now = Instant::now();
                        let mut timer_fired = false;
                        for event in events.drain(..) {
                            if event.id == sys::TIMER {
                                timer_fired = true;
                            } else if self.lingering.contains_key(&event.id) {
                                self.linger_look(event.id, now);
                            } else {
                                self.on_fin_event(event, now);
                            }
                        }
                        if timer_fired {
                            armed = None;
                            self.run_due(now);
                            self.drain_step(now);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "FIN watcher failed; relying on timers");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sweep.tick(), if sys::NEEDS_SWEEP || self.unwatched > 0 => self.sweep(Instant::now()),
            }
        }
        tracing::debug!("supervisor done: listener and all connections are gone");
    }

    fn next_due(&mut self) -> Option<Instant> {
        let drain = self.drain.as_ref().map(Drain::next_step);
        match (self.next_conn_due(), drain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_conn_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.due_of(id) == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// When the connection (or lingering socket) `id` next needs a look.
    fn due_of(&self, id: u64) -> Option<Instant> {
        match self.conns.get(&id) {
            Some(entry) => entry.due,
            None => self.lingering.get(&id).map(|l| l.due),
        }
    }

    fn schedule(&mut self, id: u64, at: Option<Instant>) {
        if let Some(entry) = self.conns.get_mut(&id) {
            let at = if entry.retired { None } else { at };
            if entry.due != at {
                entry.due = at;
                if let Some(at) = at {
                    self.heap.push(Reverse((at, id)));
                }
            }
        }
        self.compact_heap();
    }

    fn compact_heap(&mut self) {
        // Rescheduling leaves the old item behind (deleted lazily when it reaches the
        // top). Far-off items (say `max_connection_age`) of connections long gone would
        // pile up with churn, so rebuild from the live deadlines now and then: amortised
        // O(1) per push.
        if self.heap.len() > 2 * (self.conns.len() + self.lingering.len()) + 64 {
            let lingering = self.lingering.iter().map(|(id, l)| Reverse((l.due, *id)));
            self.heap = self
                .conns
                .iter()
                .filter_map(|(id, e)| e.due.map(|at| Reverse((at, *id))))
                .chain(lingering)
                .collect();
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Register(id, weak) => {
                let Some(conn) = weak.upgrade() else { return };
                let c = &self.config.inner;
                let since = conn.accepted_at;
                let clock = |t: Option<Duration>| t.map(|t| IdleClock::new(t, 0, since));
                let clocks = Clocks {
                    idle: clock(c.idle_timeout),
                    read_idle: clock(c.read_idle_timeout),
                    write_idle: clock(c.write_idle_timeout),
                    close_wait: None,
                    fin_wait: None,
                };
                let any = clocks.deadlines().next().is_some();
                let entry = Entry {
                    conn: weak,
                    due: None,
                    first_byte_pending: c.first_byte_timeout.is_some(),
                    clocks: any.then(|| Box::new(clocks)),
                    retired: false,
                    closed_by_us: false,
                    watched: !sys::NEEDS_SWEEP,
                    fate: Fate::Untouched,
                };
                self.conns.insert(id, entry);
                // Watched from here rather than in `accept`: a connection closed before
                // the supervisor's next turn costs no epoll_ctl at all. A FIN that came
                // first is reported at once: adding a socket that is already ready
                // queues its event.
                match conn.socket.with(|fd| self.watcher.register(fd, id)) {
                    Some(Err(e)) => {
                        Counters::bump(&self.counters.fin_watch_failures);
                        tracing::warn!(parent: &conn.span, error = %e, "cannot watch for FIN; sweeping this connection instead");
                        if let Some(entry) = self.conns.get_mut(&id) {
                            entry.watched = false;
                            self.unwatched += 1;
                        }
                    }
                    Some(Ok(())) => {}
                    None => return, // already released
                }
                // The flags may have changed before registration reached us.
                if conn.has(flags::PEER_FIN) {
                    self.peer_fin(&conn, Instant::now());
                }
                if conn.has(flags::LOCAL_FIN) {
                    self.on_msg(Msg::LocalFin(id));
                }
                let due = self.conns.get(&id).and_then(|e| self.earliest(e, since));
                self.schedule(id, due);
            }
            Msg::LocalFin(id) => {
                if let Some(conn) = self.live(id) {
                    self.local_fin(&conn, Instant::now());
                }
            }
            Msg::PeerFin(id) => {
                if let Some(conn) = self.live(id) {
                    self.peer_fin(&conn, Instant::now());
                }
            }
            Msg::Released(id, handover) => {
                if let Some(entry) = self.conns.remove(&id) {
                    if !entry.watched && !sys::NEEDS_SWEEP {
                        self.unwatched -= 1;
                    }
                    if let Some(drain) = self.drain.as_mut() {
                        drain.count_released(entry.fate);
                        if self.conns.is_empty() {
                            self.finish_drain();
                        }
                    }
                }
                if let Some(handover) = handover {
                    self.linger(id, handover, Instant::now());
                }
            }
            Msg::Drain(request) => self.start_drain(request),
        }
    }

    fn run_due(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.due_of(id) != Some(at) {
                continue;
            }
            match self.conns.get_mut(&id) {
                Some(entry) => {
                    entry.due = None;
                    self.check(id, now);
                }
                None => self.linger_look(id, now),
            }
        }
    }

    /// The connection if it still needs supervising; forgets it otherwise.
    fn live(&mut self, id: u64) -> Option<Arc<Conn>> {
        let entry = self.conns.get(&id)?;
        if entry.retired {
            return None;
        }
        let conn = entry.conn.upgrade();
        match conn {
            Some(conn) if !conn.is_released() => Some(conn),
            // Released or gone: its `Released` message is queued and removes the entry
            // (and counts it for a drain); removing it here would lose that count.
            _ => {
                self.retire(id);
                None
            }
        }
    }

    /// Nothing left to enforce; the entry stays until the stream is released (a drain
    /// may still need to end its task).
    fn retire(&mut self, id: u64) {
        if let Some(entry) = self.conns.get_mut(&id) {
            entry.due = None;
            entry.retired = true;
        }
    }
}
