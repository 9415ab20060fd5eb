//! Deterministic tests of the rules: made-up samples and instants, no sockets, no sleeps.
//!
//! The first test runs every rule in every state a connection can reach (open, the peer's
//! FIN, ours, both, closed by the library, lingering, draining, ended by the kernel) and
//! checks, against a specification written out here independently of the table, that the
//! rule closes exactly where it applies: never before its deadline, within its lateness
//! bound after it, with the right reason and the right kind of close. The others pin one
//! behaviour each, among them every defect the review of the supervisor found.

use super::table::{Fins, State, RULES};
use super::watch::OWNER_GRACE;
use super::*;
use crate::state::CloseReason;

const S: Nanos = 1_000 * MS;
/// The timeout (or rate grace) every rule gets in these tests.
const T: Nanos = 10 * S;

/// A connection under test: its entry, and when it was accepted.
struct Conn {
    watch: Watch,
    accepted: Nanos,
}

impl Conn {
    fn new(accepted: Nanos) -> Self {
        let mut watch = Watch::default();
        watch.open();
        Self { watch, accepted }
    }

    fn look(&mut self, sample: &Sample, limits: &Limits, now: Nanos) -> Look {
        self.watch.look(sample, limits, self.accepted, now)
    }
}

/// The limits with only the rule closing for `reason` on, at `T` (a rate of 100 B/s over
/// `T` for the rates).
fn only(reason: CloseReason) -> Limits {
    let rate = Some(Rate {
        bytes_per_second: 100,
        grace: T,
    });
    let mut l = Limits::default();
    match reason {
        CloseReason::MaxConnectionAge => l.max_age = Some(T),
        CloseReason::FirstByteTimeout => l.first_byte = Some(T),
        CloseReason::IdleTimeout => l.idle = Some(T),
        CloseReason::ReadIdleTimeout => l.read_idle = Some(T),
        CloseReason::WriteIdleTimeout => l.write_idle = Some(T),
        CloseReason::CloseWaitTimeout => l.close_wait = Some(T),
        CloseReason::FinWaitTimeout => l.fin_wait = Some(T),
        CloseReason::SlowReceive => l.min_receive_rate = rate,
        CloseReason::SlowSend => l.min_send_rate = rate,
        other => panic!("{other} is not a rule"),
    }
    l
}

/// Where each rule applies, written out as the documentation says it, independently of
/// the table's encoding.
fn applies(reason: CloseReason, s: State) -> bool {
    if s.ended {
        return false;
    }
    let held_and_ours_to_end = !s.lingering && !s.closed_by_us;
    match reason {
        // Absolute or "no byte" rules end a connection the application holds, until both
        // directions are done.
        CloseReason::MaxConnectionAge
        | CloseReason::FirstByteTimeout
        | CloseReason::IdleTimeout => held_and_ours_to_end && s.fins != Fins::Both,
        // The peer can owe data, or be silent, only while it may still send.
        CloseReason::ReadIdleTimeout | CloseReason::SlowReceive => {
            held_and_ours_to_end && matches!(s.fins, Fins::None | Fins::Ours)
        }
        CloseReason::CloseWaitTimeout => held_and_ours_to_end && s.fins == Fins::Peer,
        // Bound our FIN's way out, whoever sent it, held or lingering.
        CloseReason::FinWaitTimeout => s.fins == Fins::Ours,
        CloseReason::WriteIdleTimeout | CloseReason::SlowSend => true,
        other => panic!("{other} is not a rule"),
    }
}

/// A quiet connection in the state `fins`, as a sample at `now`: every gate open (data
/// queued and unacknowledged, the peer owing data and trickling one byte a second, no
/// data received for the first-byte rule), nothing else moving. Only the receive-rate
/// rule needs the trickle; the others see no count move.
fn quiet(reason: CloseReason, fins: Fins, now: Nanos) -> Sample {
    let trickle = reason == CloseReason::SlowReceive;
    let received = if trickle { 100 + now / S } else { 100 };
    let received = if reason == CloseReason::FirstByteTimeout {
        0
    } else {
        received
    };
    Sample {
        read: 0,
        written: 1_000,
        peer_fin: fins.peer(),
        our_fin: fins.ours(),
        owes: Owed::Likely,
        user_queued: false,
        kernel: Some(Kernel {
            received: received + u64::from(fins.peer()),
            acked: 10,
            queued: true,
            since_received: if trickle { 0 } else { now },
            since_sent: now,
            peer_fin: fins.peer(),
            closed: false,
        }),
    }
}

/// Brings a new connection into a state: closed by the library, released into a
/// lingering close, joined to a drain, ended by the kernel.
fn into_state(conn: &mut Conn, closed_by_us: bool, lingering: bool, draining: bool, ended: bool) {
    if draining {
        conn.watch.join_drain();
    }
    if closed_by_us {
        conn.watch.closed(false, false);
    }
    if lingering {
        conn.watch.released(true);
    }
    if ended {
        conn.watch.kernel_ended(true);
    }
}

/// Runs looks on a quiet connection from `start` for `for_`, always at the instant the
/// rules asked for; returns when and how it closed.
fn run(
    conn: &mut Conn,
    limits: &Limits,
    sample: impl Fn(Nanos) -> Sample,
    start: Nanos,
    for_: Nanos,
) -> Option<(Nanos, CloseReason, bool)> {
    let mut now = start;
    let mut looks = 0;
    while now <= start + for_ {
        looks += 1;
        assert!(looks < 10_000, "the rules asked for looks in a loop");
        match conn.look(&sample(now), limits, now) {
            Look::Close { reason, abortive } => return Some((now, reason, abortive)),
            Look::AskOwner { reason } => return Some((now, reason, false)),
            Look::ForceClose => panic!("forced without being asked"),
            Look::Wait { next: Some(at), .. } => {
                assert!(at > now, "a look at {at} asked for at {now}: a spin");
                now = at;
            }
            Look::Wait { next: None, .. } | Look::LingerDone | Look::KernelEnded => return None,
        }
    }
    None
}

/// The latest a rule may close after its deadline: the counted clocks look `T / 8`
/// apart; the timestamp clocks are late by at most the kernel margin and the grid.
fn lateness(reason: CloseReason) -> Nanos {
    match reason {
        CloseReason::MaxConnectionAge
        | CloseReason::FirstByteTimeout
        | CloseReason::SlowReceive
        | CloseReason::SlowSend => 0,
        CloseReason::IdleTimeout | CloseReason::ReadIdleTimeout => {
            clock::KERNEL_MARGIN + T / 64 + MS
        }
        _ => T / 8,
    }
}

/// Every reachable state: each FIN state, held or lingering (a lingering close always
/// sent our FIN), closed by the library or not (its close sent our FIN), in a drain or
/// not, ended by the kernel or not.
fn reachable() -> Vec<(State, bool)> {
    let mut states = Vec::new();
    for fins in Fins::ALL {
        for closed_by_us in [false, true] {
            for lingering in [false, true] {
                for draining in [false, true] {
                    for ended in [false, true] {
                        if (closed_by_us || lingering) && !fins.ours() {
                            continue;
                        }
                        let state = State {
                            fins,
                            closed_by_us,
                            lingering,
                            ended,
                        };
                        states.push((state, draining));
                    }
                }
            }
        }
    }
    states
}

#[test]
fn every_rule_in_every_state_closes_exactly_where_it_applies() {
    let start = 100 * S;
    let mut cases = 0;
    for rule in &RULES {
        let reason = rule.reason;
        let limits = only(reason);
        for (state, draining) in reachable() {
            cases += 1;
            // Accepted at 0; the state reached at `start`, quiet since.
            let mut conn = Conn::new(0);
            into_state(
                &mut conn,
                state.closed_by_us,
                state.lingering,
                draining,
                state.ended,
            );
            assert_eq!(conn.watch.state(&quiet(reason, state.fins, start)), state);
            let sample = |now: Nanos| quiet(reason, state.fins, now - start);
            // The age and first-byte rules count from accept; the others from the look
            // that found them applying.
            let deadline = match reason {
                CloseReason::MaxConnectionAge | CloseReason::FirstByteTimeout => T,
                _ => start + T,
            };
            let closed = run(&mut conn, &limits, sample, start, 10 * T);
            let expected = applies(reason, state);
            match closed {
                Some((at, why, abortive)) => {
                    assert!(
                        expected,
                        "{reason} closed in {state:?}, where it does not apply"
                    );
                    assert_eq!(why, reason, "{state:?}");
                    assert_eq!(abortive, rule.abortive, "{reason}: the kind of close");
                    let earliest = deadline.max(start);
                    assert!(
                        at >= earliest,
                        "{reason} in {state:?}: early, at {at} < {earliest}"
                    );
                    assert!(
                        at <= earliest + lateness(reason),
                        "{reason} in {state:?}: late by {}",
                        at - earliest
                    );
                }
                None => assert!(!expected, "{reason} never closed in {state:?}"),
            }
        }
    }
    // 9 rules, 4 FIN states, and the ways to be in each.
    assert_eq!(cases, RULES.len() * reachable().len());
    assert!(cases >= 300, "{cases}");
}

#[test]
fn the_kinds_of_close_are_as_documented() {
    // A reset only where the peer has stopped taking data.
    for rule in &RULES {
        let abortive = matches!(
            rule.reason,
            CloseReason::FinWaitTimeout | CloseReason::WriteIdleTimeout | CloseReason::SlowSend
        );
        assert_eq!(rule.abortive, abortive, "{}", rule.reason);
    }
    // One row per rule, each reason once.
    for (i, a) in RULES.iter().enumerate() {
        assert!(RULES[i + 1..].iter().all(|b| b.reason != a.reason));
    }
}

#[test]
fn activity_postpones_every_counted_and_timestamped_clock() {
    // Busy for 5 timeouts, a byte each second (data both ways, acks moving), then quiet:
    // closed one timeout after the last activity, never while busy.
    for reason in [
        CloseReason::IdleTimeout,
        CloseReason::ReadIdleTimeout,
        CloseReason::WriteIdleTimeout,
        CloseReason::CloseWaitTimeout,
        CloseReason::FinWaitTimeout,
    ] {
        let fins = match reason {
            CloseReason::CloseWaitTimeout => Fins::Peer,
            CloseReason::FinWaitTimeout => Fins::Ours,
            _ => Fins::None,
        };
        let limits = only(reason);
        let busy_until = 5 * T;
        let sample = |now: Nanos| {
            let last = now.min(busy_until) / S * S;
            let n = last / S;
            Sample {
                read: n,
                written: 1_000 + n,
                peer_fin: fins.peer(),
                our_fin: fins.ours(),
                owes: Owed::No,
                user_queued: false,
                kernel: Some(Kernel {
                    received: n + u64::from(fins.peer()),
                    acked: n,
                    queued: true,
                    since_received: now - last,
                    since_sent: now - last,
                    peer_fin: fins.peer(),
                    closed: false,
                }),
            }
        };
        let mut conn = Conn::new(0);
        let (at, why, _) = run(&mut conn, &limits, sample, 0, 10 * T).expect("closes");
        assert_eq!(why, reason);
        assert!(at >= busy_until + T, "{reason}: early at {at}");
        assert!(
            at <= busy_until + T + lateness(reason),
            "{reason}: late at {at}"
        );
    }
}

#[test]
fn fin_wait_counts_a_half_closed_peer_that_keeps_sending_as_alive() {
    // Defect 8: after our FIN the peer keeps uploading 4 B every 50 ms and acknowledges
    // nothing new (we send nothing): well-behaved, never reset.
    let limits = only(CloseReason::FinWaitTimeout);
    let sample = |now: Nanos| Sample {
        read: 4 * (now / (50 * MS)),
        our_fin: true,
        kernel: Some(Kernel {
            received: 4 * (now / (50 * MS)),
            acked: 1,
            since_received: now % (50 * MS),
            since_sent: now,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    assert_eq!(run(&mut conn, &limits, sample, 0, 20 * T), None);
}

#[test]
fn write_idle_bounds_both_fins_with_data_queued_and_a_lingering_close_after_the_peers_fin() {
    // Defects 5 and 6: both FINs exchanged (LAST_ACK, CLOSING) with data still queued
    // for a peer that reads nothing: reset at the write-idle timeout, whether the
    // application holds the stream or a lingering close does.
    let limits = only(CloseReason::WriteIdleTimeout);
    let sample = |_: Nanos| Sample {
        written: 1 << 20,
        peer_fin: true,
        our_fin: true,
        kernel: Some(Kernel {
            received: 10,
            acked: 4096,
            queued: true,
            peer_fin: true,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    for lingering in [false, true] {
        let mut conn = Conn::new(0);
        if lingering {
            conn.watch.released(true);
        }
        let closed = run(&mut conn, &limits, sample, S, 10 * T);
        let (at, why, abortive) = closed.expect("bounded");
        assert_eq!((why, abortive), (CloseReason::WriteIdleTimeout, true));
        assert!((S + T..=S + T + T / 8).contains(&at), "{at}");
    }
}

#[test]
fn after_the_librarys_close_nothing_is_due_in_the_past() {
    // The CPU defect: closed for read-idle while `min_receive_rate` judged a peer that
    // owed data; the handler keeps the stream. No deadline of a rule that no longer
    // applies may be left behind, and no receive window restarted at every look.
    let limits = Limits {
        read_idle: Some(300 * MS),
        min_receive_rate: Some(Rate {
            bytes_per_second: 1,
            grace: 60 * S,
        }),
        ..Limits::default()
    };
    let sample = |fins: Fins, now: Nanos| Sample {
        read: 17,
        owes: Owed::Likely,
        peer_fin: fins.peer(),
        our_fin: fins.ours(),
        kernel: Some(Kernel {
            received: 17,
            since_received: now,
            since_sent: now,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    let (at, why, _) = run(&mut conn, &limits, |n| sample(Fins::None, n), 0, 10 * S).unwrap();
    assert_eq!(why, CloseReason::ReadIdleTimeout);
    conn.watch.closed(false, true);
    // Our FIN is out; the peer owes what it owed.
    match conn.look(&sample(Fins::Ours, at), &limits, at) {
        Look::Wait { next, .. } => assert_eq!(next, None, "nothing left to look at"),
        other => panic!("{other:?}"),
    }
    assert!(!conn.watch.has_clocks(), "no clock kept for nothing");
}

#[test]
fn the_receive_rate_excuses_silence_and_a_finished_message() {
    // Defects 3, 9 and 10: a request (or a body, or WINDOW_UPDATEs) arrived whole, then
    // silence while the handler computes: idle, not slow, for as long as it lasts.
    let limits = only(CloseReason::SlowReceive);
    let done = |now: Nanos| Sample {
        read: 300,
        owes: Owed::Likely,
        kernel: Some(Kernel {
            received: 300,
            since_received: now,
            since_sent: now,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    assert_eq!(run(&mut conn, &limits, done, 0, 20 * T), None);
    // A tail early in the first window (a request in two segments), silence since.
    let tail = |now: Nanos| {
        let received = if now >= 10 * MS { 400 } else { 300 };
        Sample {
            kernel: Some(Kernel {
                received,
                since_received: now.saturating_sub(10 * MS),
                since_sent: now,
                ..Kernel::default()
            }),
            ..done(now)
        }
    };
    let mut conn = Conn::new(0);
    assert_eq!(run(&mut conn, &limits, tail, 0, 20 * T), None);
    // A slowloris: one byte every second, the last always recent: too slow.
    let trickle = |now: Nanos| Sample {
        kernel: Some(Kernel {
            received: 300 + now / S,
            since_received: now % S,
            since_sent: now,
            ..Kernel::default()
        }),
        ..done(now)
    };
    let mut conn = Conn::new(0);
    let (at, why, abortive) = run(&mut conn, &limits, trickle, 0, 20 * T).unwrap();
    assert_eq!((at, why, abortive), (T, CloseReason::SlowReceive, false));
}

#[test]
fn a_send_rate_counts_a_stalled_reader_as_too_slow() {
    // With data queued the peer certainly owes acknowledgements: silence is too slow.
    let limits = only(CloseReason::SlowSend);
    let stalled = |_: Nanos| Sample {
        written: 1 << 20,
        kernel: Some(Kernel {
            acked: 4096,
            queued: true,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    let closed = run(&mut conn, &limits, stalled, 0, 10 * T);
    assert_eq!(closed, Some((T, CloseReason::SlowSend, true)));
}

#[test]
fn a_bare_fin_is_not_a_first_byte() {
    // The peer connected and sent only its FIN: `bytes_received` counts the FIN as one.
    let limits = only(CloseReason::FirstByteTimeout);
    let bare_fin = |_: Nanos| Sample {
        peer_fin: true,
        kernel: Some(Kernel {
            received: 1,
            peer_fin: true,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    let closed = run(&mut conn, &limits, bare_fin, 0, 10 * T);
    assert_eq!(closed, Some((T, CloseReason::FirstByteTimeout, false)));
    // One byte of data is one.
    let one_byte = |_: Nanos| Sample {
        peer_fin: true,
        kernel: Some(Kernel {
            received: 2,
            peer_fin: true,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    assert_eq!(run(&mut conn, &limits, one_byte, 0, 10 * T), None);
}

#[test]
fn idle_timeouts_beyond_the_kernels_32_bit_milliseconds_still_expire() {
    // `tcpi_last_data_recv` is 32-bit milliseconds: it can never say 50 days. Such a
    // timeout is counted instead, and expires.
    let day = 24 * 3_600 * S;
    let limits = Limits {
        idle: Some(50 * day),
        read_idle: Some(60 * day),
        ..Limits::default()
    };
    let capped = |now: Nanos| Sample {
        kernel: Some(Kernel {
            since_received: now.min(u64::from(u32::MAX) * MS),
            since_sent: now.min(u64::from(u32::MAX) * MS),
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    let (at, why, _) = run(&mut conn, &limits, capped, 0, 100 * day).expect("expires");
    assert_eq!(why, CloseReason::IdleTimeout);
    assert!((50 * day..=50 * day + 50 * day / 8).contains(&at), "{at}");
}

#[test]
fn a_kernel_end_stops_every_rule_and_a_lingering_close_ends_once_delivered() {
    let limits = Limits {
        idle: Some(T),
        write_idle: Some(T),
        fin_wait: Some(T),
        ..Limits::default()
    };
    let mut conn = Conn::new(0);
    conn.watch.kernel_ended(true);
    let sample = quiet(CloseReason::IdleTimeout, Fins::None, 0);
    assert_eq!(
        conn.look(&sample, &limits, 0),
        Look::Wait {
            next: None,
            watch_writes: false,
            watch_reads: false
        }
    );
    // The kernel closed the socket with no event seen yet: the supervisor asks why.
    let mut conn = Conn::new(0);
    let closed = Sample {
        kernel: Some(Kernel {
            closed: true,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    assert_eq!(conn.look(&closed, &limits, S), Look::KernelEnded);
    // A lingering close: done once nothing is queued, or without the kernel's view.
    let mut conn = Conn::new(0);
    conn.watch.released(true);
    let delivered = Sample {
        kernel: Some(Kernel::default()),
        ..Sample::default()
    };
    assert_eq!(conn.look(&delivered, &limits, S), Look::LingerDone);
    assert_eq!(conn.look(&Sample::default(), &limits, S), Look::LingerDone);
}

#[test]
fn gates_that_close_ask_to_be_told_when_they_open() {
    let limits = Limits {
        write_idle: Some(T),
        min_receive_rate: Some(Rate {
            bytes_per_second: 1,
            grace: T,
        }),
        ..Limits::default()
    };
    let mut conn = Conn::new(0);
    let idle = Sample {
        kernel: Some(Kernel::default()),
        ..Sample::default()
    };
    assert_eq!(
        conn.look(&idle, &limits, S),
        Look::Wait {
            next: None,
            watch_writes: true,
            watch_reads: true
        }
    );
    // Without the kernel's view the write clock runs all along (nothing to be told).
    let portable = Sample::default();
    match conn.look(&portable, &limits, S) {
        Look::Wait {
            next: Some(_),
            watch_writes: false,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_drain_counts_a_connection_accepted_while_it_starts() {
    // Defect 4: a connection registered after the drain took its list joins it.
    let mut drain = Drain::new(0, S, 2 * S, true, 1);
    let mut late = Conn::new(0);
    drain.join();
    late.watch.join_drain();
    assert_eq!(drain.step(2 * S), DrainStep::Hard);
    assert_eq!(late.watch.leave_drain(), Some(Fate::Untouched));
    assert!(!drain.count(Fate::Forced));
    assert!(drain.count(Fate::Untouched));
    let r = drain.report();
    assert_eq!((r.connections, r.finished, r.forced), (2, 1, 1));
}

#[test]
fn a_connection_whose_owner_closes_it_is_asked_first_then_closed_after_the_grace() {
    // Over TLS the serve closes the connection itself (close_notify, then our FIN): a
    // graceful rule asks it; only if our FIN is not out by the grace's end does the
    // library close the connection at the TCP level.
    let limits = only(CloseReason::IdleTimeout);
    let quiet = |fins: Fins, now: Nanos| Sample {
        our_fin: fins.ours(),
        kernel: Some(Kernel {
            since_received: now,
            since_sent: now,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    conn.watch.set_owner_closes();
    let deadline = T + clock::KERNEL_MARGIN + T / 64 + MS;
    let asked_at = (T..=deadline)
        .step_by(MS as usize)
        .find(|now| {
            matches!(
                conn.look(&quiet(Fins::None, *now), &limits, *now),
                Look::AskOwner {
                    reason: CloseReason::IdleTimeout
                }
            )
        })
        .expect("asked by the deadline");
    // Not before the grace ends; then, with our FIN still not out, forced.
    match conn.look(&quiet(Fins::None, asked_at + MS), &limits, asked_at + MS) {
        Look::Wait { next, .. } => assert_eq!(next, Some(asked_at + OWNER_GRACE)),
        other => panic!("{other:?}"),
    }
    let at = asked_at + OWNER_GRACE;
    assert_eq!(
        conn.look(&quiet(Fins::None, at), &limits, at),
        Look::ForceClose
    );
    // The owner answered in time: no forced close, and nothing kept for it.
    let mut conn = Conn::new(0);
    conn.watch.set_owner_closes();
    assert!(matches!(
        conn.watch.closing(CloseReason::IdleTimeout, false, S),
        Look::AskOwner { .. }
    ));
    let answered = conn.look(&quiet(Fins::Ours, 2 * S), &limits, 2 * S);
    assert!(
        matches!(answered, Look::Wait { next: None, .. }),
        "{answered:?}"
    );
    assert!(!conn.watch.has_clocks());
    // Asked a second time (a request): nothing new, the grace stands.
    let mut conn = Conn::new(0);
    conn.watch.set_owner_closes();
    let _ = conn.watch.closing(CloseReason::IdleTimeout, false, S);
    assert!(matches!(
        conn.watch.closing(CloseReason::Requested, false, S),
        Look::Wait { next: None, .. }
    ));
    // An abortive rule never waits for the owner.
    let mut conn = Conn::new(0);
    conn.watch.set_owner_closes();
    assert_eq!(
        conn.watch.closing(CloseReason::WriteIdleTimeout, true, S),
        Look::Close {
            reason: CloseReason::WriteIdleTimeout,
            abortive: true
        }
    );
}

#[test]
fn a_body_a_handler_waits_for_is_owed_even_in_silence() {
    // Under a framework serve the library knows a handler waits for more of a request
    // body: a client that sends nothing more (slowhttptest -B between its bytes) is too
    // slow, not idle.
    let limits = only(CloseReason::SlowReceive);
    let waiting = |now: Nanos| Sample {
        read: 300,
        owes: Owed::Yes,
        kernel: Some(Kernel {
            received: 300,
            since_received: now,
            since_sent: now,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    let mut conn = Conn::new(0);
    let closed = run(&mut conn, &limits, waiting, 0, 10 * T);
    assert_eq!(closed, Some((T, CloseReason::SlowReceive, false)));
}

#[test]
fn data_held_for_a_shut_http2_window_is_queued_data() {
    // The kernel's queue is empty (the client acknowledged all it allowed), but the serve
    // holds response data for a stream whose window stays shut: the send rules judge it.
    let shut_window = |now: Nanos| Sample {
        written: 65_535,
        user_queued: true,
        kernel: Some(Kernel {
            acked: 65_535 + now / S * 17, // PINGs answered: 17 bytes a second
            queued: false,
            ..Kernel::default()
        }),
        ..Sample::default()
    };
    // (Acknowledged PING answers move the count, so an inactivity timeout sees progress;
    // a rate does not.)
    let limits = only(CloseReason::SlowSend);
    let mut conn = Conn::new(0);
    let closed = run(&mut conn, &limits, shut_window, 0, 10 * T);
    assert_eq!(closed, Some((T, CloseReason::SlowSend, true)));
}
