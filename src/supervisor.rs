//! One task per listener: holds every connection's deadlines (one timer for all), learns
//! of peer FINs and kernel failures from the FIN watcher, and closes connections from
//! outside, whether or not their handlers poll.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{CloseMode, Config};
use crate::conn::Conn;
use crate::drain::DrainReport;
use crate::idle::{IdleClock, Verdict};
use crate::state::{flags, CloseReason};
use crate::stats::{Counters, KernelState, TcpInfo};
use crate::sys::{self, FinEvent, FinWatcher};

/// Messages from listeners and streams to the supervisor.
#[derive(Debug)]
pub(crate) enum Msg {
    Register(u64, Weak<Conn>),
    LocalFin(u64),
    Released(u64),
    Drain(DrainRequest),
}

/// Asks the supervisor to drain every connection (see `TcpListener::drain`).
#[derive(Debug)]
pub(crate) struct DrainRequest {
    pub(crate) soft: Duration,
    pub(crate) hard: Duration,
    pub(crate) reply: oneshot::Sender<DrainReport>,
}

/// What a drain did to a connection; each connection is counted under its last fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Untouched,
    HalfClosed,
    Forced,
}

struct Drain {
    soft_at: Instant,
    hard_at: Instant,
    soft_done: bool,
    /// Activity (bytes both ways) of each connection when the drain started.
    baseline: HashMap<u64, u64>,
    report: DrainReport,
    reply: oneshot::Sender<DrainReport>,
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

/// The inactivity clocks of one connection.
#[derive(Default)]
struct Clocks {
    idle: Option<IdleClock>,
    read_idle: Option<IdleClock>,
    write_idle: Option<IdleClock>,
    close_wait: Option<IdleClock>,
}

impl Clocks {
    fn deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        [self.idle, self.read_idle, self.write_idle, self.close_wait]
            .into_iter()
            .flatten()
            .map(|c| c.deadline())
    }
}

/// The activity counters as of now: the application's and, on Linux, the kernel's.
struct Sample {
    read: u64,
    write: u64,
    info: Option<TcpInfo>,
}

impl Sample {
    fn take(conn: &Conn) -> Self {
        let info = conn.tcp_info();
        let (k_read, k_write) = info.map_or((0, 0), |i| (i.bytes_received, i.bytes_acked));
        Self {
            read: conn.bytes_read.load(Relaxed).wrapping_add(k_read),
            write: conn.bytes_written.load(Relaxed).wrapping_add(k_write),
            info,
        }
    }
}

const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

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
            tokio::select! {
                biased;
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

    /// The earliest instant any rule needs a look, as of the entry's clocks.
    fn earliest(&self, entry: &Entry, accepted_at: Instant) -> Option<Instant> {
        let c = &self.config.inner;
        [
            c.max_connection_age.map(|t| accepted_at + t),
            c.first_byte_timeout
                .filter(|_| entry.first_byte_pending)
                .map(|t| accepted_at + t),
            c.fin_wait_timeout
                .zip(entry.local_fin_at)
                .map(|(t, at)| at + t),
        ]
        .into_iter()
        .flatten()
        .chain(entry.clocks.iter().flat_map(|c| c.deadlines()))
        .min()
    }

    fn earliest_for(&self, id: u64, _now: Instant) -> Option<Instant> {
        let entry = self.conns.get(&id)?;
        let conn = entry.conn.upgrade()?;
        self.earliest(entry, conn.accepted_at)
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

    /// Evaluates every rule of one connection: closes it if one expired, otherwise
    /// schedules the next look.
    fn check(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.live(id) else { return };
        let sample = Sample::take(&conn);
        let c = self.config.inner.clone();
        let entry = self.conns.get_mut(&id).expect("live");
        let mut next: Option<Instant> = None;
        let mut expired: Option<CloseReason> = None;
        let mut merge = |verdict: Verdict, reason: CloseReason| match verdict {
            Verdict::Expired => {
                expired.get_or_insert(reason);
            }
            Verdict::CheckAt(at) => next = Some(next.map_or(at, |n: Instant| n.min(at))),
        };
        let at_or_expired = |at: Instant| {
            if now >= at {
                Verdict::Expired
            } else {
                Verdict::CheckAt(at)
            }
        };

        if let Some(t) = c.max_connection_age {
            merge(
                at_or_expired(conn.accepted_at + t),
                CloseReason::MaxConnectionAge,
            );
        }
        if let (Some(t), true) = (c.first_byte_timeout, entry.first_byte_pending) {
            if sample.read > 0 {
                entry.first_byte_pending = false;
            } else {
                merge(
                    at_or_expired(conn.accepted_at + t),
                    CloseReason::FirstByteTimeout,
                );
            }
        }
        let mut no_clocks = Clocks::default();
        let clocks = entry.clocks.as_deref_mut().unwrap_or(&mut no_clocks);
        if let Some(clock) = clocks.close_wait.as_mut() {
            merge(
                clock.check(sample.write, now),
                CloseReason::CloseWaitTimeout,
            );
        }
        if let (Some(t), Some(at)) = (c.fin_wait_timeout, entry.local_fin_at) {
            let peer_done = conn.has(flags::PEER_FIN)
                || sample.info.is_some_and(|i| i.state.peer_fin_received());
            if !peer_done {
                merge(at_or_expired(at + t), CloseReason::FinWaitTimeout);
            }
        }
        if let Some(clock) = clocks.write_idle.as_mut() {
            // Only a writer with bytes waiting can be stalled.
            let waiting = sample.info.is_none_or(|i| i.has_pending_send());
            let verdict = if waiting {
                clock.check(sample.write, now)
            } else {
                clock.hold(sample.write, now)
            };
            merge(verdict, CloseReason::WriteIdleTimeout);
        }
        if let Some(clock) = clocks.read_idle.as_mut() {
            merge(clock.check(sample.read, now), CloseReason::ReadIdleTimeout);
        }
        if let Some(clock) = clocks.idle.as_mut() {
            merge(
                clock.check(sample.read.wrapping_add(sample.write), now),
                CloseReason::IdleTimeout,
            );
        }

        match expired {
            Some(reason) => {
                let force_abort = matches!(
                    reason,
                    CloseReason::FinWaitTimeout | CloseReason::WriteIdleTimeout
                );
                self.close(&conn, reason, sample.info, force_abort);
            }
            None => self.schedule(id, next),
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

    fn close(
        &mut self,
        conn: &Conn,
        reason: CloseReason,
        info: Option<TcpInfo>,
        force_abort: bool,
    ) {
        self.retire(conn.id);
        // Already over without us (both FINs exchanged behind the stream's back, or a
        // failure the watcher could not report): nothing to close, nothing to count.
        // `getpeername` fails with ENOTCONN once the kernel has closed the socket.
        let ended = conn
            .socket
            .with(|fd| SockRef::from(&fd).peer_addr().is_err())
            .unwrap_or(true);
        if ended {
            tracing::debug!(parent: &conn.span, reason = %reason, "deadline passed after the connection had ended");
            return;
        }
        if !conn.mark_closed(reason) {
            return;
        }
        // A FIN would queue behind unsent data and leave an orphan in FIN_WAIT_1.
        let pending = info.is_some_and(|i| i.has_pending_send());
        let abortive = force_abort || pending || self.config.close_mode() == CloseMode::Abortive;
        let result = conn.socket.with(|fd| {
            if abortive {
                sys::disconnect(fd)
            } else {
                SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
            }
        });
        let aborted_task = conn.abort_task();
        match result {
            Some(Err(e)) => {
                tracing::debug!(parent: &conn.span, reason = %reason, error = %e, "close failed (already closed?)");
            }
            _ => {
                tracing::info!(parent: &conn.span, reason = %reason, abortive, aborted_task, "closed by tcp-hygiene");
            }
        }
    }

    fn peer_fin(&mut self, conn: &Conn, now: Instant) {
        conn.set_flag(flags::PEER_FIN);
        if conn.has(flags::LOCAL_FIN) {
            // Both directions are done: nothing left to enforce.
            self.retire(conn.id);
            return;
        }
        let Some(entry) = self.conns.get_mut(&conn.id) else {
            return;
        };
        if let Some(t) = self.config.close_wait_timeout() {
            let clocks = entry.clocks.get_or_insert_with(Box::default);
            if clocks.close_wait.is_none() {
                let sample = Sample::take(conn);
                clocks.close_wait = Some(IdleClock::new(t, sample.write, now));
            }
        }
        let due = self.earliest_for(conn.id, now);
        self.schedule(conn.id, due);
    }

    fn on_fin_event(&mut self, event: FinEvent, now: Instant) {
        let Some(conn) = self.live(event.id) else {
            return;
        };
        let info = conn.tcp_info();
        let kernel_closed = info.is_some_and(|i| i.state == KernelState::Close);
        if event.error || (event.hangup && kernel_closed) {
            self.kernel_failure(&conn, info);
        } else if info.is_none_or(|i| i.state.peer_fin_received()) {
            self.peer_fin(&conn, now);
        }
    }

    /// The kernel ended the connection: reset by the peer, keepalive or user timeout, or
    /// (no error) the normal end after both FINs.
    fn kernel_failure(&mut self, conn: &Conn, info: Option<TcpInfo>) {
        let error = conn
            .socket
            .with(|fd| SockRef::from(&fd).take_error())
            .and_then(|r| r.ok().flatten());
        let errno = error.as_ref().and_then(|e| e.raw_os_error());
        if let Some(errno) = errno {
            conn.set_kernel_error(errno);
        }
        // If the handler's own read or write took the error first, it recorded it. EPIPE
        // is left out: the application also gets it for writing after its own shutdown.
        let errno = errno.or_else(|| conn.app_error().filter(|e| *e != libc::EPIPE));
        // `SO_ERROR` is read-once: a handler blocked in read or write is woken by the same
        // kernel event and its syscall may take the error first (measured: a writer to a
        // vanished peer gets ETIMEDOUT itself, then SO_ERROR is 0). The retry counters
        // survive the close: `retransmits` > 0 after a retransmission timeout (user
        // timeout, `tcp_retries2`), `probes` > 0 after keepalive or zero-window probes;
        // a reset or a normal close leaves both at 0.
        let timed_out = match errno {
            // A reset: ECONNRESET, or EPIPE if it came in CLOSE_WAIT.
            Some(libc::ECONNRESET | libc::EPIPE) => false,
            // ETIMEDOUT, or the last ICMP error seen while retrying (EHOSTUNREACH, …),
            // which the kernel reports instead of ETIMEDOUT when it gives up.
            Some(_) => true,
            None => info.is_some_and(|i| i.retransmits > 0 || i.probes > 0),
        };
        let written = conn.bytes_written.load(Relaxed);
        // The peer acknowledged one byte more than we wrote: our FIN (measured: a normal
        // close in either order leaves `bytes_acked` = written + 1, a reset leaves it
        // at most `written`). Also covers a shutdown whose LOCAL_FIN flag is not set yet.
        let our_fin_acked = info.is_some_and(|i| i.bytes_acked > written);
        if errno.is_none() && !timed_out && (our_fin_acked || conn.has(flags::LOCAL_FIN)) {
            // No error: both FINs went through (TIME_WAIT took the socket over, or
            // LAST_ACK ended). The normal end of a connection, not a failure, and
            // nothing is left to enforce (no further kernel event will come).
            conn.set_flag(flags::PEER_FIN);
            self.retire(conn.id);
            return;
        }
        let outstanding = info.is_some_and(|i| written > i.bytes_acked);
        let reason = match (timed_out, outstanding) {
            (true, true) => CloseReason::UserTimeout,
            (true, false) => CloseReason::KeepaliveFailed,
            (false, _) => CloseReason::ResetByPeer,
        };
        self.retire(conn.id);
        if conn.mark_closed(reason) {
            let aborted_task = conn.abort_task();
            tracing::info!(parent: &conn.span, reason = %reason, errno, aborted_task, "connection failed in the kernel");
        }
    }

    fn start_drain(&mut self, request: DrainRequest) {
        let now = Instant::now();
        self.conns.retain(|_, e| e.conn.strong_count() > 0);
        let baseline = self
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let conn = e.conn.upgrade()?;
                let sample = Sample::take(&conn);
                Some((*id, sample.read.wrapping_add(sample.write)))
            })
            .collect();
        let report = DrainReport {
            connections: self.conns.len(),
            ..DrainReport::default()
        };
        tracing::info!(connections = report.connections, soft = ?request.soft, hard = ?request.hard, "draining");
        self.drain = Some(Drain {
            soft_at: now + request.soft,
            hard_at: now + request.hard.max(request.soft),
            soft_done: false,
            baseline,
            report,
            reply: request.reply,
        });
        if self.conns.is_empty() {
            self.finish_drain();
        }
    }

    /// Soft deadline: half-close the connections that moved no byte since the drain
    /// began. Hard deadline: close the rest and end their tasks.
    fn drain_step(&mut self, now: Instant) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        if !drain.soft_done && now >= drain.soft_at {
            drain.soft_done = true;
            let baseline = std::mem::take(&mut drain.baseline);
            for (id, entry) in self.conns.iter_mut() {
                let Some(conn) = entry.conn.upgrade() else {
                    continue;
                };
                if conn.has(flags::CLOSED | flags::LOCAL_FIN) {
                    continue;
                }
                let sample = Sample::take(&conn);
                let idle = baseline.get(id) == Some(&sample.read.wrapping_add(sample.write))
                    && !sample.info.is_some_and(|i| i.has_pending_send());
                if idle {
                    let _ = conn
                        .socket
                        .with(|fd| SockRef::from(&fd).shutdown(std::net::Shutdown::Write));
                    conn.set_flag(flags::LOCAL_FIN);
                    entry.local_fin_at = Some(now);
                    entry.fate = Fate::HalfClosed;
                    if conn.has(flags::PEER_FIN) {
                        entry.retired = true;
                        entry.due = None;
                    }
                    tracing::info!(parent: &conn.span, "drain: idle at the soft deadline, half-closed");
                }
            }
        }
        let Some(drain) = self.drain.as_ref() else {
            return;
        };
        if now >= drain.hard_at {
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            let mut forced = 0;
            for id in ids {
                let Some(conn) = self.conns.get(&id).and_then(|e| e.conn.upgrade()) else {
                    continue;
                };
                let info = conn.tcp_info();
                self.close(&conn, CloseReason::Drained, info, false);
                conn.abort_task();
                if let Some(entry) = self.conns.get_mut(&id) {
                    entry.fate = Fate::Forced;
                }
                forced += 1;
            }
            if let Some(drain) = self.drain.as_mut() {
                drain.report.forced = forced;
            }
            self.finish_drain();
        }
    }

    fn finish_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            tracing::info!(report = ?drain.report, "drain finished");
            let _ = drain.reply.send(drain.report);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.live(id) {
                if !conn.has(flags::PEER_FIN)
                    && conn.socket.with(sys::peer_fin_by_peek) == Some(true)
                {
                    self.peer_fin(&conn, now);
                }
            }
        }
    }
}
