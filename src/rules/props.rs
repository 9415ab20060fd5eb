//! Properties of the rules over random sequences of events.
//!
//! A small model of the world drives the rules the way the supervisor does: a few
//! connections, each with the kernel's side (bytes each way, acknowledgements, FINs,
//! resets), the application's (reads, writes, shutdowns, drops, the task that serves it)
//! and the state word's (the close reason, claimed once). Random events happen to it,
//! time passes, deadlines come, a drain may start; after each step, and at the end, when
//! every stream is dropped and every close has run its course, the invariants are
//! checked:
//!
//! - never closed before its deadline (the world's own record of each rule's quiet time);
//! - never a reset unless the table says abortive (or the user asked for one);
//! - every FIN we send is bounded: a silent peer ends up reset by `fin_wait_timeout`;
//! - each connection is counted once (a close reason, or how it ended);
//! - a library or kernel end always ends a serve-owned task;
//! - a drain's report adds up and counts every connection accepted before its end.

use proptest::prelude::*;

use super::table::{Fins, RULES};
use super::watch;
use super::*;
use crate::state::CloseReason;

const MAX_CONNS: usize = 4;

/// 512 cases (well under a second); CI runs more with `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Which of a rule's settings a case uses: off, or 200 ms, or 1 s.
fn setting() -> impl Strategy<Value = Option<Nanos>> {
    prop_oneof![Just(None), Just(Some(200 * MS)), Just(Some(1_000 * MS))]
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        (setting(), setting(), setting(), setting()),
        (setting(), setting(), setting()),
        (setting(), setting()),
    )
        .prop_map(
            |(
                (max_age, first_byte, idle, read_idle),
                (write_idle, close_wait, fin_wait),
                (rr, sr),
            )| {
                let rate = |grace: Option<Nanos>| {
                    grace.map(|grace| Rate {
                        bytes_per_second: 50,
                        grace,
                    })
                };
                Limits {
                    max_age: max_age.map(|a| a * 3),
                    first_byte,
                    idle,
                    read_idle,
                    write_idle,
                    close_wait,
                    fin_wait,
                    min_receive_rate: rate(rr),
                    min_send_rate: rate(sr),
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Ev {
    /// A new connection; served by a task spawned through the library, or not; closed
    /// by that task itself when the library would (a serve over TLS), or not.
    Accept {
        task: bool,
        owner: bool,
    },
    /// The owner closes the connection it was asked to (close_notify, then our FIN).
    OwnerAnswers {
        c: usize,
    },
    PeerSends {
        c: usize,
        n: u8,
    },
    PeerAcks {
        c: usize,
    },
    PeerFin {
        c: usize,
    },
    PeerReset {
        c: usize,
    },
    AppReads {
        c: usize,
    },
    AppWrites {
        c: usize,
        n: u16,
    },
    AppShutdown {
        c: usize,
    },
    AppDrops {
        c: usize,
    },
    /// The supervisor learns of the connection's task.
    TaskKnown {
        c: usize,
    },
    /// The stream's marks (or a serve) say the peer owes data, or not.
    Owes {
        c: usize,
        owes: bool,
    },
    Tick {
        ms: u16,
    },
    Drain {
        soft_ms: u16,
        hard_ms: u16,
    },
    RequestClose {
        c: usize,
        abortive: bool,
    },
}

fn event() -> impl Strategy<Value = Ev> {
    let c = 0..MAX_CONNS;
    prop_oneof![
        2 => (any::<bool>(), any::<bool>()).prop_map(|(task, owner)| Ev::Accept { task, owner: task && owner }),
        1 => c.clone().prop_map(|c| Ev::OwnerAnswers { c }),
        3 => (c.clone(), 1..200u8).prop_map(|(c, n)| Ev::PeerSends { c, n }),
        3 => c.clone().prop_map(|c| Ev::PeerAcks { c }),
        1 => c.clone().prop_map(|c| Ev::PeerFin { c }),
        1 => c.clone().prop_map(|c| Ev::PeerReset { c }),
        2 => c.clone().prop_map(|c| Ev::AppReads { c }),
        3 => (c.clone(), 1..5_000u16).prop_map(|(c, n)| Ev::AppWrites { c, n }),
        1 => c.clone().prop_map(|c| Ev::AppShutdown { c }),
        1 => c.clone().prop_map(|c| Ev::AppDrops { c }),
        1 => c.clone().prop_map(|c| Ev::TaskKnown { c }),
        2 => (c.clone(), any::<bool>()).prop_map(|(c, owes)| Ev::Owes { c, owes }),
        6 => (1..1_500u16).prop_map(|ms| Ev::Tick { ms }),
        1 => (0..1_500u16, 0..3_000u16).prop_map(|(soft_ms, hard_ms)| Ev::Drain { soft_ms, hard_ms }),
        1 => (c, any::<bool>()).prop_map(|(c, abortive)| Ev::RequestClose { c, abortive }),
    ]
}

/// What became of a connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    None,
    /// Spawned; the supervisor does not know it yet.
    Unknown,
    Known,
    Aborted,
}

/// One connection, as the kernel, the application and the state word see it.
#[derive(Debug)]
struct Conn {
    watch: Watch,
    accepted: Nanos,
    // The kernel.
    written: u64,
    acked: u64,
    received: u64,
    read: u64,
    peer_fin: bool,
    our_fin: bool,
    /// Reset (by either side) or timed out: over.
    reset: bool,
    // The state word.
    peer_fin_flag: bool,
    local_fin_flag: bool,
    reason: Option<CloseReason>,
    counts: u32,
    // The application.
    held: bool,
    lingering: bool,
    freed: bool,
    owes: bool,
    task: Task,
    /// The library closed it for a rule or a request (which ends its task), or the kernel
    /// failed it, while the application held it.
    must_end_task: bool,
    // When things last happened, for the deadlines.
    last_recv: Nanos,
    last_sent: Nanos,
    last_ack: Nanos,
    queued_since: Option<Nanos>,
    owes_since: Option<Nanos>,
    peer_fin_at: Option<Nanos>,
    our_fin_at: Option<Nanos>,
    /// Counted by the drain (joined it).
    in_drain: bool,
    /// When its owner was asked to close it.
    asked_at: Option<Nanos>,
}

impl Conn {
    fn new(now: Nanos, task: bool, owner: bool) -> Self {
        let mut watch = Watch::default();
        watch.open();
        if owner {
            watch.set_owner_closes();
        }
        Self {
            watch,
            accepted: now,
            written: 0,
            acked: 0,
            received: 0,
            read: 0,
            peer_fin: false,
            our_fin: false,
            reset: false,
            peer_fin_flag: false,
            local_fin_flag: false,
            reason: None,
            counts: 0,
            held: true,
            lingering: false,
            freed: false,
            owes: false,
            task: if task { Task::Unknown } else { Task::None },
            must_end_task: false,
            last_recv: now,
            last_sent: now,
            last_ack: now,
            queued_since: None,
            owes_since: None,
            peer_fin_at: None,
            our_fin_at: None,
            in_drain: false,
            asked_at: None,
        }
    }

    fn queued(&self) -> bool {
        self.written > self.acked
    }

    /// Whether the supervisor looks at it at all.
    fn watched(&self) -> bool {
        !self.freed && !self.watch.is_ended() && (self.held || self.lingering)
    }

    fn sample(&self, now: Nanos) -> Sample {
        let since = |at: Nanos| (now - at) / MS * MS;
        Sample {
            read: self.read,
            written: self.written,
            peer_fin: self.peer_fin_flag,
            our_fin: self.local_fin_flag,
            owes: if self.held && self.owes {
                Owed::Likely
            } else {
                Owed::No
            },
            user_queued: false,
            kernel: Some(Kernel {
                received: self.received + u64::from(self.peer_fin),
                acked: self.acked,
                queued: self.queued(),
                since_received: since(self.last_recv),
                since_sent: since(self.last_sent),
                peer_fin: self.peer_fin,
                closed: self.reset || (self.peer_fin && self.our_fin && !self.queued()),
            }),
        }
    }

    fn claim(&mut self, reason: CloseReason) -> bool {
        if self.reason.is_some() {
            return false;
        }
        self.reason = Some(reason);
        self.counts += 1;
        true
    }

    fn abort_task(&mut self) {
        assert_eq!(
            self.task,
            Task::Known,
            "aborting a task the supervisor does not hold"
        );
        self.task = Task::Aborted;
    }
}

struct World {
    limits: Limits,
    now: Nanos,
    conns: Vec<Conn>,
    heap: DeadlineHeap<u32>,
    drain: Option<Drain>,
    /// A finished drain's report, and the connections it should have counted.
    reports: Vec<(crate::stats::DrainReport, usize)>,
    drained: usize,
}

impl World {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            now: 1_000 * MS,
            conns: Vec::new(),
            heap: DeadlineHeap::default(),
            drain: None,
            reports: Vec::new(),
            drained: 0,
        }
    }

    fn is_current(conns: &[Conn], index: u32, sched: u32) -> bool {
        conns
            .get(index as usize)
            .is_some_and(|c| c.watch.is_live() && c.watch.sched == sched)
    }

    fn schedule(&mut self, c: usize, at: Option<Nanos>) {
        let watch = &mut self.conns[c].watch;
        watch.sched = watch.sched.wrapping_add(1);
        let sched = watch.sched;
        if let Some(at) = at {
            assert!(at > self.now, "a deadline in the past: a spin");
            let conns = &self.conns;
            self.heap.push(at, c as u32, sched, conns.len(), |i, s| {
                Self::is_current(conns, i, s)
            });
        }
    }

    /// The supervisor's look at connection `c`, and what it does with the answer.
    fn look(&mut self, c: usize) {
        for _ in 0..4 {
            let now = self.now;
            let conn = &mut self.conns[c];
            if !conn.watched() {
                return;
            }
            let sample = conn.sample(now);
            let look = conn.watch.look(&sample, &self.limits, conn.accepted, now);
            match look {
                Look::Close { reason, abortive } => {
                    self.check_deadline(c, reason);
                    let rule = RULES.iter().find(|r| r.reason == reason).expect("a rule");
                    assert_eq!(
                        abortive, rule.abortive,
                        "{reason}: a reset where the table says FIN"
                    );
                    if !self.close(c, reason, abortive, true) {
                        return;
                    }
                }
                Look::AskOwner { reason } => {
                    self.check_deadline(c, reason);
                    self.ask_owner(c, reason);
                }
                Look::ForceClose => {
                    if !self.force_close(c) {
                        return;
                    }
                }
                Look::KernelEnded => return self.kernel_ended(c),
                Look::LingerDone => return self.end_linger(c, false),
                Look::Wait { next, .. } => return self.schedule(c, next),
            }
        }
    }

    /// The supervisor's close; returns whether to look again.
    fn close(&mut self, c: usize, reason: CloseReason, abortive: bool, ends_task: bool) -> bool {
        let now = self.now;
        let conn = &mut self.conns[c];
        if conn.lingering {
            // A lingering close whose peer stopped taking data: reset, counted if first.
            conn.claim(reason);
            conn.reset = true;
            self.end_linger(c, true);
            return false;
        }
        if conn.reset {
            self.kernel_ended(c);
            return false;
        }
        let claimed = conn.claim(reason);
        if !abortive && !claimed {
            if ends_task && conn.watch.end_task() {
                conn.abort_task();
            }
            return false;
        }
        if abortive {
            conn.reset = true;
        } else {
            conn.local_fin_flag = true;
            if !conn.our_fin {
                conn.our_fin = true;
                conn.our_fin_at = Some(now);
            }
        }
        if ends_task {
            conn.must_end_task = true;
        }
        if conn.watch.closed(abortive, ends_task) {
            conn.abort_task();
        }
        !abortive
    }

    fn ask_owner(&mut self, c: usize, reason: CloseReason) {
        let conn = &mut self.conns[c];
        conn.claim(reason);
        conn.asked_at.get_or_insert(self.now);
    }

    /// The library closes at the TCP level what its owner did not close in time.
    fn force_close(&mut self, c: usize) -> bool {
        let now = self.now;
        let conn = &mut self.conns[c];
        let asked = conn.asked_at.expect("forced without being asked");
        let grace_end = asked + watch::OWNER_GRACE;
        assert!(now >= grace_end, "forced {} early", grace_end - now);
        if conn.reset {
            self.kernel_ended(c);
            return false;
        }
        conn.local_fin_flag = true;
        if !conn.our_fin {
            conn.our_fin = true;
            conn.our_fin_at = Some(now);
        }
        conn.must_end_task = true;
        if conn.watch.closed(false, true) {
            conn.abort_task();
        }
        true
    }

    /// A close asked for (the controller, the serve's drain), as the supervisor does it.
    fn close_on_request(&mut self, c: usize, reason: CloseReason, abortive: bool) -> bool {
        let now = self.now;
        match self.conns[c].watch.closing(reason, abortive, now) {
            Look::Close { reason, abortive } => self.close(c, reason, abortive, true),
            Look::AskOwner { reason } => {
                self.ask_owner(c, reason);
                true
            }
            Look::ForceClose => self.force_close(c),
            _ => false,
        }
    }

    fn kernel_ended(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let failure = conn.reset;
        if failure {
            conn.claim(CloseReason::ResetByPeer);
            if conn.held {
                conn.must_end_task = true;
            }
        }
        if conn.watch.kernel_ended(failure) {
            conn.abort_task();
        }
        self.schedule(c, None);
    }

    fn end_linger(&mut self, c: usize, reset: bool) {
        let conn = &mut self.conns[c];
        if !reset && conn.reason.is_none() {
            conn.counts += 1; // how it ended, deferred to now
        }
        conn.lingering = false;
        self.free(c);
    }

    fn free(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        conn.freed = true;
        conn.watch.free();
    }

    /// The rule that closed connection `c` had really run out.
    fn check_deadline(&self, c: usize, reason: CloseReason) {
        let l = &self.limits;
        let conn = &self.conns[c];
        let now = self.now;
        let quiet = |since: &[Nanos], timeout: Option<Nanos>| {
            let last = since.iter().copied().max().unwrap_or(0);
            let timeout = timeout.expect("the rule is on");
            assert!(
                now >= last + timeout,
                "{reason} closed {c} at {now}, {} early: {conn:#?}",
                last + timeout - now
            );
        };
        let a = conn.accepted;
        match reason {
            CloseReason::MaxConnectionAge => quiet(&[a], l.max_age),
            CloseReason::FirstByteTimeout => {
                assert_eq!(conn.received, 0, "a first byte came");
                quiet(&[a], l.first_byte);
            }
            CloseReason::IdleTimeout => quiet(&[a, conn.last_recv, conn.last_sent], l.idle),
            CloseReason::ReadIdleTimeout => quiet(&[a, conn.last_recv], l.read_idle),
            CloseReason::CloseWaitTimeout => quiet(
                &[
                    conn.peer_fin_at.expect("the peer's FIN"),
                    conn.last_sent,
                    conn.last_ack,
                ],
                l.close_wait,
            ),
            CloseReason::FinWaitTimeout => quiet(
                &[
                    conn.our_fin_at.expect("our FIN"),
                    conn.last_recv,
                    conn.last_ack,
                ],
                l.fin_wait,
            ),
            CloseReason::WriteIdleTimeout => quiet(
                &[conn.queued_since.expect("data queued"), conn.last_ack],
                l.write_idle,
            ),
            CloseReason::SlowSend => quiet(
                &[conn.queued_since.expect("data queued")],
                l.min_send_rate.map(|r| r.grace),
            ),
            CloseReason::SlowReceive => quiet(
                &[conn.owes_since.expect("owed data")],
                l.min_receive_rate.map(|r| r.grace),
            ),
            other => panic!("{other} is no rule"),
        }
    }

    /// Time passes to `until`: every deadline on the way comes, in order.
    fn advance(&mut self, until: Nanos) {
        loop {
            let conns = &self.conns;
            let next = self.heap.next(|i, s| Self::is_current(conns, i, s));
            let drain = self.drain.as_ref().map(Drain::next_step);
            let Some(at) = next
                .into_iter()
                .chain(drain)
                .min()
                .filter(|at| *at <= until)
            else {
                break;
            };
            self.now = self.now.max(at);
            let now = self.now;
            loop {
                let conns = &self.conns;
                let Some(c) = self.heap.pop_due(now, |i, s| Self::is_current(conns, i, s)) else {
                    break;
                };
                self.look(c as usize);
            }
            self.drain_step();
        }
        self.now = self.now.max(until);
    }

    fn drain_step(&mut self) {
        let now = self.now;
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        match drain.step(now) {
            DrainStep::Wait => {}
            DrainStep::Soft => {
                // Idle between requests: nothing owed, nothing queued, nothing unread.
                let mut busy = false;
                for c in 0..self.conns.len() {
                    let conn = &self.conns[c];
                    if !conn.held || !conn.watch.in_drain() || conn.watch.fate() != Fate::Untouched
                    {
                        continue;
                    }
                    if conn.watch.is_ended() || conn.reason.is_some() || conn.local_fin_flag {
                        continue;
                    }
                    if conn.owes || conn.queued() || conn.received > conn.read {
                        busy = true;
                        continue;
                    }
                    if self.close(c, CloseReason::Drained, false, false) {
                        self.conns[c].watch.set_fate(Fate::IdleClosed);
                        self.look(c);
                    }
                }
                if let Some(drain) = self.drain.as_mut() {
                    drain.soft_pass_done(busy, now);
                }
            }
            DrainStep::Hard => {
                for c in 0..self.conns.len() {
                    if !self.conns[c].held || !self.conns[c].watch.in_drain() {
                        continue;
                    }
                    self.conns[c].watch.set_fate(Fate::Forced);
                    if self.close(c, CloseReason::Drained, false, true) {
                        self.look(c);
                    }
                    let conn = &mut self.conns[c];
                    conn.must_end_task = true;
                    if conn.watch.end_task() {
                        conn.abort_task();
                    }
                    if let Some(fate) = conn.watch.leave_drain() {
                        self.drain.as_mut().expect("draining").count(fate);
                    }
                }
                self.finish_drain();
            }
        }
    }

    fn finish_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            self.reports.push((drain.report(), self.drained));
        }
    }

    fn count_in_drain(&mut self, fate: Fate) {
        if let Some(drain) = self.drain.as_mut() {
            if drain.count(fate) {
                self.finish_drain();
            }
        }
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        // Events about a connection that is not there (or is gone) do nothing.
        let live = |w: &World, c: usize| w.conns.get(c).is_some_and(|k| !k.freed);
        match ev {
            Ev::Accept { task, owner } if self.conns.len() < MAX_CONNS => {
                let c = self.conns.len();
                self.conns.push(Conn::new(now, task, owner));
                if let Some(drain) = self.drain.as_mut() {
                    drain.join();
                    self.conns[c].watch.join_drain();
                    self.conns[c].in_drain = true;
                    self.drained += 1;
                }
                self.look(c);
            }
            Ev::PeerSends { c, n } if live(self, c) => {
                let conn = &mut self.conns[c];
                if !conn.peer_fin && !conn.reset {
                    conn.received += u64::from(n);
                    conn.last_recv = now;
                    // Data to an orphan or a lingering close is read and dropped.
                    if conn.lingering {
                        conn.read = conn.received;
                    }
                }
            }
            Ev::PeerAcks { c } if live(self, c) => {
                let conn = &mut self.conns[c];
                if !conn.reset && conn.acked < conn.written {
                    conn.acked = conn.written;
                    conn.last_ack = now;
                    conn.queued_since = None;
                    if conn.lingering {
                        self.look(c);
                    }
                }
            }
            Ev::PeerFin { c } if live(self, c) => {
                let conn = &mut self.conns[c];
                if !conn.peer_fin && !conn.reset {
                    conn.peer_fin = true;
                    conn.peer_fin_at = Some(now);
                    // The kernel watcher's event.
                    if conn.held {
                        conn.peer_fin_flag = true;
                    }
                    self.look(c);
                }
            }
            Ev::PeerReset { c } if live(self, c) => {
                let conn = &mut self.conns[c];
                if !(conn.reset || conn.peer_fin && conn.our_fin) {
                    conn.reset = true;
                    if conn.watched() {
                        if conn.lingering {
                            self.look(c);
                        } else {
                            self.kernel_ended(c);
                        }
                    }
                }
            }
            Ev::AppReads { c } if live(self, c) && self.conns[c].held => {
                let conn = &mut self.conns[c];
                conn.read = conn.received;
                if conn.peer_fin {
                    conn.peer_fin_flag = true;
                    self.look(c);
                }
            }
            Ev::AppWrites { c, n } if live(self, c) && self.conns[c].held => {
                let conn = &mut self.conns[c];
                if !conn.reset && !conn.local_fin_flag {
                    if !conn.queued() {
                        conn.queued_since = Some(now);
                    }
                    conn.written += u64::from(n);
                    conn.last_sent = now;
                    self.look(c);
                }
            }
            Ev::OwnerAnswers { c }
                if live(self, c) && self.conns[c].held && self.conns[c].asked_at.is_some() =>
            {
                self.apply(Ev::AppShutdown { c });
            }
            Ev::AppShutdown { c } if live(self, c) && self.conns[c].held => {
                let conn = &mut self.conns[c];
                if !conn.local_fin_flag && !conn.reset {
                    conn.local_fin_flag = true;
                    conn.our_fin = true;
                    conn.our_fin_at = Some(now);
                    self.look(c);
                }
            }
            Ev::AppDrops { c } if live(self, c) && self.conns[c].held => self.release(c),
            Ev::TaskKnown { c } if c < self.conns.len() => self.task_known(c),
            Ev::Owes { c, owes } if live(self, c) && self.conns[c].held => {
                let conn = &mut self.conns[c];
                if owes && !conn.owes {
                    conn.owes_since = Some(now);
                }
                conn.owes = owes;
                self.look(c);
            }
            Ev::Tick { ms } => self.advance(now + u64::from(ms) * MS),
            Ev::Drain { soft_ms, hard_ms } if self.drain.is_none() && self.reports.is_empty() => {
                let held: Vec<usize> = (0..self.conns.len())
                    .filter(|c| self.conns[*c].held)
                    .collect();
                for &c in &held {
                    self.conns[c].watch.join_drain();
                    self.conns[c].in_drain = true;
                }
                self.drained = held.len();
                let soft = u64::from(soft_ms) * MS;
                let hard = u64::from(hard_ms) * MS;
                self.drain = Some(Drain::new(now, soft, hard, true, held.len()));
                if held.is_empty() {
                    self.finish_drain();
                } else {
                    self.drain_step();
                }
            }
            Ev::RequestClose { c, abortive }
                if live(self, c)
                    && self.conns[c].held
                    && self.conns[c].watched()
                    && self.close_on_request(c, CloseReason::Requested, abortive) =>
            {
                self.look(c);
            }
            _ => {}
        }
    }

    fn task_known(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if conn.task != Task::Unknown {
            return;
        }
        // The supervisor takes a task only for a stream still held.
        if !conn.held || conn.freed {
            conn.task = Task::None;
            return;
        }
        conn.task = Task::Known;
        if conn.watch.task_known() {
            conn.task = Task::Aborted;
        }
    }

    /// The application drops its stream: the release, and the supervisor's handling of
    /// it (a lingering close if data is queued for a peer that may still send).
    fn release(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        conn.held = false;
        if conn.task == Task::Known || conn.task == Task::Unknown {
            conn.task = Task::None; // the stream is gone: the task no longer matters
        }
        let lingering = !conn.reset && conn.queued() && !conn.peer_fin;
        // Our FIN goes out with the close (ours, or the lingering close's).
        if !conn.our_fin && !conn.reset {
            conn.our_fin = true;
            conn.our_fin_at = Some(self.now);
        }
        if !lingering && conn.reason.is_none() {
            conn.counts += 1; // how it ended
        }
        let fate = conn.watch.released(lingering);
        if let Some(fate) = fate {
            self.count_in_drain(fate);
        }
        if lingering {
            self.conns[c].lingering = true;
            self.look(c);
        } else {
            self.free(c);
        }
    }

    /// Every connection goes through the form the supervisor keeps it in (its entry, its
    /// clocks apart) and back, as there between any two events: nothing is lost.
    fn store_and_load(&mut self) {
        for conn in &mut self.conns {
            let before = conn.watch.clone();
            let (entry, clocks) = std::mem::take(&mut conn.watch).store();
            assert_eq!(entry.has_clocks(), clocks.is_some());
            conn.watch = Watch::load(entry, clocks);
            assert_eq!(conn.watch, before);
        }
    }

    fn check_tasks(&self) {
        for (c, conn) in self.conns.iter().enumerate() {
            if conn.must_end_task && conn.task == Task::Known {
                panic!(
                    "connection {c} ended by the library or the kernel kept its task: {conn:#?}"
                );
            }
        }
    }

    /// Every stream dropped, the peer done, time run out: each connection is counted
    /// once and every drain report adds up.
    fn finish(&mut self) {
        for c in 0..self.conns.len() {
            self.task_known(c);
        }
        self.check_tasks();
        // A silent peer after our FIN is bounded by the fin-wait (or write-idle) rule.
        if self.limits.fin_wait.is_some() {
            let until = self.now + 100 * 1_000 * MS;
            self.advance(until);
            for (c, conn) in self.conns.iter().enumerate() {
                if conn.watched() && conn.our_fin && !conn.peer_fin && !conn.reset {
                    panic!("our FIN on {c} is unbounded: {conn:#?}");
                }
            }
        }
        for c in 0..self.conns.len() {
            if self.conns[c].held {
                self.release(c);
            }
        }
        // The peer takes everything and closes; lingering closes run their course.
        for c in 0..self.conns.len() {
            self.apply(Ev::PeerAcks { c });
            self.apply(Ev::PeerFin { c });
        }
        let until = self.now + 100 * 1_000 * MS;
        self.advance(until);
        self.finish_drain();
        for (c, conn) in self.conns.iter().enumerate() {
            assert!(conn.freed, "connection {c} never ended: {conn:#?}");
            assert_eq!(
                conn.counts, 1,
                "connection {c} counted {} times: {conn:#?}",
                conn.counts
            );
        }
        for (report, drained) in &self.reports {
            assert_eq!(report.connections, *drained, "{report:?}");
            assert_eq!(
                report.connections,
                report.finished + report.idle_closed + report.forced,
                "{report:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_invariants_hold_over_random_event_sequences(
        limits in limits(),
        events in proptest::collection::vec(event(), 1..80),
    ) {
        let mut world = World::new(limits);
        for ev in events {
            world.apply(ev);
            world.check_tasks();
            world.store_and_load();
        }
        world.finish();
    }

    #[test]
    fn a_connection_is_in_the_state_its_flags_and_the_kernel_say(
        peer in any::<bool>(), ours in any::<bool>(), kernel_peer in any::<bool>(),
    ) {
        let watch = Watch::default();
        let sample = Sample {
            peer_fin: peer,
            our_fin: ours,
            kernel: Some(Kernel { peer_fin: kernel_peer, ..Kernel::default() }),
            ..Sample::default()
        };
        let fins = watch.state(&sample).fins;
        prop_assert_eq!(fins, Fins::of(peer || kernel_peer, ours));
        prop_assert!(!watch.has_task());
    }
}

/// The write watch's protocol between the supervisor and a stream, as act.rs and the
/// supervisor's `wrote` run it: a stream that writes at random instants while a rule
/// always wants to hear of writes (its data may be queued), a supervisor that schedules
/// a look within the pause on each message and looks at its deadlines. Each write is judged (a look sees it) within the pause after it; a
/// connection's writes make at most one message a pause; and with no writes the
/// supervisor goes quiet (no deadline of its own).
mod write_watch {
    use super::*;
    use watch::{Watch, WriteWatch};

    const PAUSE: Nanos = 100 * MS;

    #[derive(Default)]
    struct Pair {
        watch: Watch,
        /// The stream's bit: the supervisor asked to hear of the next write.
        standing: bool,
        /// A look the supervisor has scheduled.
        next: Option<Nanos>,
        /// The earliest write no look has seen yet.
        unseen: Option<Nanos>,
        messages: Vec<Nanos>,
    }

    impl Pair {
        fn look(&mut self, now: Nanos) {
            if let Some(at) = self.unseen.take() {
                assert!(now - at <= PAUSE, "a write at {at} judged only at {now}");
            }
            self.next = None;
            match self.watch.write_watch(true, self.standing) {
                WriteWatch::Leave => assert!(self.standing, "left without a standing watch"),
                WriteWatch::Ask => self.standing = true,
                WriteWatch::Pause => self.next = Some(now + PAUSE),
            }
        }

        fn write(&mut self, now: Nanos) {
            self.unseen.get_or_insert(now);
            if std::mem::take(&mut self.standing) {
                // The message: a look within the pause, beside any scheduled.
                self.messages.push(now);
                self.watch.wrote();
                self.next = Some(self.next.map_or(now + PAUSE, |n| n.min(now + PAUSE)));
            }
        }

        /// Runs the scheduled look if it is due by `to`.
        fn advance(&mut self, to: Nanos) {
            if let Some(at) = self.next.filter(|&at| at <= to) {
                self.look(at);
            }
        }
    }

    proptest! {
        #![proptest_config(super::config())]

        #[test]
        fn writes_are_judged_within_the_pause_at_one_message_a_pause(
            gaps in proptest::collection::vec(0..3 * PAUSE / 2, 1..200),
        ) {
            let mut pair = Pair::default();
            pair.watch.open();
            pair.look(0);
            let mut now = 0;
            for gap in gaps {
                // Looks due before the write run first (twice: a pause's look may ask).
                pair.advance(now + gap);
                pair.advance(now + gap);
                now += gap;
                pair.write(now);
            }
            // No more writes: the last is judged, then nothing is scheduled.
            pair.advance(now + PAUSE);
            prop_assert!(pair.unseen.is_none());
            prop_assert!(pair.next.is_none(), "quiet without writes");
            prop_assert!(pair.standing);
            for w in pair.messages.windows(2) {
                prop_assert!(w[1] - w[0] >= PAUSE, "two messages {} apart", w[1] - w[0]);
            }
        }
    }
}
