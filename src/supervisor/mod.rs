//! One task per listener: holds every connection's deadlines (one timer for all), learns
//! of peer FINs and kernel failures from the FIN watcher, and closes connections from
//! outside, whether or not their handlers poll.

mod drain;
mod kernel;
mod rules;

pub(crate) use drain::DrainRequest;
use drain::{Drain, Fate};
use kernel::SWEEP_INTERVAL;
use rules::Clocks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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
    Released(u64),
    Drain(DrainRequest),
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
        let (tx, rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            config: config.clone(),
            counters: counters.clone(),
            watcher: watcher.clone(),
            conns: HashMap::new(),
            heap: BinaryHeap::new(),
            drain: None,
        };
        tokio::spawn(supervisor.run(rx));
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
        }))
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

struct Supervisor {
    config: Config,
    counters: Arc<Counters>,
    watcher: Arc<FinWatcher>,
    conns: HashMap<u64, Entry>,
    /// Lazily deleted: an item is live only if it matches its entry's `due`.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    drain: Option<Drain>,
}

/// What the supervisor keeps per connection.
struct Entry {
    conn: Weak<Conn>,
    due: Option<Instant>,
    local_fin_at: Option<Instant>,
    first_byte_pending: bool,
    /// Boxed: most connections run none of these clocks (all off by default, and
    /// `close_wait` only after a FIN), and unboxed they would be most of the entry.
    clocks: Option<Box<Clocks>>,
    /// No rule applies any more (closed, or both FINs exchanged).
    retired: bool,
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
        loop {
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
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg),
                    None => break,
                },
                result = watcher.next_batch(&mut events) => match result {
                    Ok(()) => {
                        let now = Instant::now();
                        let mut timer_fired = false;
                        for event in events.drain(..) {
                            if event.id == sys::TIMER {
                                timer_fired = true;
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
                _ = sweep.tick(), if sys::NEEDS_SWEEP => self.sweep(Instant::now()),
            }
        }
        tracing::debug!("supervisor done: listener and all connections are gone");
    }

    fn next_due(&mut self) -> Option<Instant> {
        let drain = self
            .drain
            .as_ref()
            .map(|d| if d.soft_done { d.hard_at } else { d.soft_at });
        match (self.next_conn_due(), drain) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_conn_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            match self.conns.get(&id) {
                Some(entry) if entry.due == Some(at) => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
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
        // Rescheduling leaves the old item behind (deleted lazily when it reaches the
        // top). Far-off items (say `max_connection_age`) of connections long gone would
        // pile up with churn, so rebuild from the live deadlines now and then: amortised
        // O(1) per push.
        if self.heap.len() > 2 * self.conns.len() + 64 {
            self.heap = self
                .conns
                .iter()
                .filter_map(|(id, e)| e.due.map(|at| Reverse((at, *id))))
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
                };
                let any = clocks.deadlines().next().is_some();
                let entry = Entry {
                    conn: weak,
                    due: None,
                    local_fin_at: None,
                    first_byte_pending: c.first_byte_timeout.is_some(),
                    clocks: any.then(|| Box::new(clocks)),
                    retired: false,
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
                        tracing::warn!(parent: &conn.span, error = %e, "cannot watch for FIN; relying on reads and timers");
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
                let now = Instant::now();
                let both_done = self
                    .conns
                    .get(&id)
                    .and_then(|e| e.conn.upgrade())
                    .is_some_and(|c| c.has(flags::PEER_FIN));
                if both_done {
                    self.retire(id);
                } else if let Some(entry) = self.conns.get_mut(&id) {
                    if entry.local_fin_at.is_none() {
                        entry.local_fin_at = Some(now);
                        let due = self.earliest_for(id, now);
                        self.schedule(id, due);
                    }
                }
            }
            Msg::Released(id) => {
                let entry = self.conns.remove(&id);
                if let (Some(drain), Some(entry)) = (self.drain.as_mut(), entry) {
                    match entry.fate {
                        Fate::Untouched => drain.report.finished += 1,
                        Fate::HalfClosed => drain.report.idle_closed += 1,
                        Fate::Forced => {}
                    }
                    if self.conns.is_empty() {
                        self.finish_drain();
                    }
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
            if self.conns.get(&id).is_some_and(|e| e.due == Some(at)) {
                self.conns.get_mut(&id).expect("checked").due = None;
                self.check(id, now);
            }
        }
    }

    /// The connection if it still needs supervising; forgets it otherwise.
    fn live(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.conns.get(&id)?.conn.upgrade();
        match conn {
            Some(conn) if !conn.is_released() && !conn.has(flags::CLOSED) => Some(conn),
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
