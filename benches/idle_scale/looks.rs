//! What idle timeouts cost when they come due: the supervisor's look at a connection
//! whose deadline has arrived (`PHASE=looks`, contender `hygiene_timeouts`).
//!
//! With `TCP_INFO` a look reads when the wire was last used and schedules the next one
//! at the true deadline, so a connection costs one look per timeout (two at most, for
//! activity that always comes just after a look), not the eight of a counted clock; a
//! silent one is looked at once, when it expires. Between deadlines nothing runs, which
//! is what the `hold` phase's idle window shows: with 60 s timeouts no deadline falls
//! in it. This phase measures the looks themselves, with the three timeouts at a few
//! seconds so that every connection's first deadline falls in one window:
//!
//! 1. all connections accepted; a second later the client writes one byte on each (the
//!    server never reads it, so only the kernel's timestamps see it);
//! 2. the window opens when the runtime has taken in those bytes' readiness, before the
//!    first deadline (one timeout after accept), and closes before the second (one
//!    timeout after the bytes): it holds exactly one look per connection, each finding
//!    recent activity and only rescheduling;
//! 3. after the window the connections, silent since their byte, expire:
//!    `looks_then_closed` should be all of them, which shows that the looks happened.
//!
//! `look_us` is the window's CPU time (everything the process did in it) per look; the
//! orchestrator turns it into the average cost over one 60 s timeout.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::lines::{expect_line, metric, tell, Lines};
use crate::probes::{context_switches, cpu_time};

/// Room for the runtime to take in the readiness of the bytes the client writes.
const SETTLE: Duration = Duration::from_millis(300);
/// Room between the window and the deadlines around it.
const MARGIN: Duration = Duration::from_millis(250);

pub(crate) async fn measure(
    listener: &tcp_hygiene::TcpListener,
    timeout: Duration,
    accepted: Range<Instant>,
    n: usize,
    to_client: &mut tokio::process::ChildStdin,
    from_client: &mut Lines,
) {
    // Every connection's first look is due between `accepted.start + timeout` and
    // `accepted.end + timeout` plus the supervisor's grid (timeout / 64); the bytes must
    // come later than that minus the margin, so that the window can close after it.
    let grid = timeout / 64;
    tokio::time::sleep_until((accepted.end + grid + MARGIN * 2).into()).await;
    let touched = Instant::now();
    tell(to_client, "touch").await;
    expect_line(from_client, "touched").await;
    // The last byte's connection expires this much after the first's.
    let touching = touched.elapsed();
    tokio::time::sleep(SETTLE).await;

    let opens = Instant::now();
    let closes = touched + timeout - MARGIN;
    let in_time = opens + MARGIN <= accepted.start + timeout;
    let (cpu0, ctx0) = (cpu_time(), context_switches());
    tokio::time::sleep_until(closes.into()).await;
    let (cpu, ctx, window) = (
        cpu_time() - cpu0,
        context_switches() - ctx0,
        opens.elapsed(),
    );
    println!(
        "looks: timeouts {} s, {n} connections accepted in {:.2} s and touched in {:.2} s, window {:.2} s from {:.2} s after the first accept{}",
        timeout.as_secs_f64(),
        (accepted.end - accepted.start).as_secs_f64(),
        touching.as_secs_f64(),
        window.as_secs_f64(),
        (opens - accepted.start).as_secs_f64(),
        if in_time { "" } else { ": TOO LATE, some looks came before it (look_us not reported)" }
    );
    metric("looks_window_s", window.as_secs_f64());
    metric("looks_cpu_ms", cpu.as_secs_f64() * 1e3);
    metric("looks_wakeups", ctx as f64);
    if in_time {
        metric("look_us", cpu.as_secs_f64() * 1e6 / n as f64);
    }

    // Silent since their byte: each expires one timeout after it, and is closed at once
    // (a machine that takes a while to touch them all takes about as long to close them).
    let expired = touched + touching + timeout + grid + Duration::from_secs(1);
    tokio::time::sleep_until((expired + touching).into()).await;
    metric("looks_then_closed", listener.stats().closed_total() as f64);
}
