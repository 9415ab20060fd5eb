//! Idle connections at scale: what supervision costs while nothing happens, and how fast
//! and how precisely it acts when many peers leave at once.
//!
//! ```text
//! cargo bench --bench idle_scale                  # 15,000 connections
//! cargo bench --bench idle_scale -- --quick       # 5,000 connections
//! cargo bench --bench idle_scale -- --n 10000     # any other count
//! ```
//!
//! `RLIMIT_NOFILE` is capped at 20,000 per process, so this binary plays three roles
//! (chosen by the `TCP_HYGIENE_BENCH_ROLE` environment variable): the orchestrator runs
//! one server process per contender (`raw` tokio streams, then `hygiene` streams, each
//! in a fresh process so RSS and CPU time are its own), and each server runs its clients
//! in a child process. Servers hold their accepted streams and never poll them.
//!
//! Figures (`value <figure> <contender> <number>`):
//!
//! - `mem_per_conn_bytes`: heap bytes live per connection (a counting global allocator:
//!   requested sizes, so malloc's own per-chunk overhead is extra; `allocs_per_conn`
//!   says how many chunks), counted from before the listener is built, so that what the
//!   library allocates for a listener (supervisor, pages of slots) is spread over the
//!   connections it holds; `rss_per_conn_bytes` as a cross-check, and for `hygiene` the
//!   kernel-side epoll registrations of the FIN watcher (`/sys/kernel/slab`).
//! - `idle_cpu_pct`: process CPU time (`CLOCK_PROCESS_CPUTIME_ID`, what
//!   `getrusage` sums) over the idle window, in percent of one
//!   core; `idle_wakeups`: context switches of all threads in that window.
//! - `fin_detect_*`: from the client's `shutdown(SHUT_WR)` to the server's
//!   `ConnectionHandle::peer_closed()` resolving, both stamped with `CLOCK_MONOTONIC`
//!   (one clock for every process): one at a time (`fin_detect_p50_us`, `…_p99_us`), and
//!   1,000 at once (`fin_burst_*_ms`, `fin_burst_detected`).
//! - `reap_late_*_ms`: with `close_wait_timeout` = 1 s, the client's EOF (the server socket
//!   left `CLOSE_WAIT`) minus (detection + 1 s). The detection stamp is taken by a task
//!   woken after the supervisor's own, so this slightly understates lateness;
//!   `reap_early` counts EOFs before the client's own FIN + 1 s, a bound no measurement
//!   error can cross.
//!
//! # Layout
//!
//! `server` (a server process: hold, measure, then `fin`'s FIN and reap phases),
//! `client` (the client process), `alloc` (the counting allocator) and `probes` (what a
//! process measures about itself); `../common` is shared with the other benches.

mod alloc;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod fin;
mod probes;
mod server;

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::process::Stdio;
use std::time::Duration;

use common::host::load_average;
use common::{Args, Mode};

const CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
const BURST: usize = 1000;

/// A number from the environment that the orchestrator passes to its server processes.
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    n: usize,
    idle_secs: u64,
    /// Connections half-closed one at a time, and at once.
    sequential: usize,
    burst: usize,
}

fn main() {
    match common::role().as_deref() {
        Some("server") => return server::main(),
        Some("client") => return client::main(),
        _ => {}
    }
    let args = Args::from_env();
    let mode = args.mode();
    let mut plan = match mode {
        Mode::Smoke => Plan {
            n: 300,
            idle_secs: 1,
            sequential: 20,
            burst: 100,
        },
        Mode::Quick => Plan {
            n: 5000,
            idle_secs: 10,
            sequential: 200,
            burst: BURST,
        },
        Mode::Full => Plan {
            n: 15_000,
            idle_secs: 10,
            sequential: 500,
            burst: BURST,
        },
    };
    if let Some(n) = args.value("--n") {
        plan.n = n;
    }
    plan.sequential = plan.sequential.min(plan.n / 4);
    plan.burst = plan.burst.min(plan.n / 2);
    println!(
        "idle_scale ({}): {} idle connections per server, idle window {} s, FINs: {} one at a time then {} at once; load average {}",
        mode.label(),
        plan.n,
        plan.idle_secs,
        plan.sequential,
        plan.burst,
        load_average()
    );

    let mut results: HashMap<(String, String), f64> = HashMap::new();
    for contender in ["raw", "hygiene"] {
        for (key, value) in run_server(contender, &plan) {
            results.insert((key, contender.to_string()), value);
        }
    }
    let get = |key: &str, c: &str| results.get(&(key.to_string(), c.to_string())).copied();

    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>12}",
        "figure", "raw", "hygiene", "hygiene−raw"
    );
    let mut keys: Vec<&String> = results.keys().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    for key in &keys {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let (r, h) = (get(key, "raw"), get(key, "hygiene"));
        let d = r.zip(h).map(|(r, h)| h - r);
        println!("{key:<28} {:>12} {:>12} {:>12}", fmt(r), fmt(h), fmt(d));
    }
    println!();
    for key in &keys {
        for c in ["raw", "hygiene"] {
            if let Some(v) = get(key, c) {
                println!("value {key} {c} {v:.3}");
            }
        }
    }
    for key in [
        "mem_per_conn_bytes",
        "rss_per_conn_bytes",
        "idle_cpu_pct",
        "allocs_per_conn",
    ] {
        if let (Some(r), Some(h)) = (get(key, "raw"), get(key, "hygiene")) {
            println!("value {}_overhead hygiene {:.3}", key, h - r);
        }
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let overhead = |key: &str| get(key, "hygiene").zip(get(key, "raw")).map(|(h, r)| h - r);
    if let (Some(h), Some(d)) = (get("idle_cpu_pct", "hygiene"), overhead("idle_cpu_pct")) {
        println!(
            "target idle CPU < 0.1 % of a core with {} connections: {} (hygiene {h:.4} %, {d:+.4} % over raw)",
            plan.n,
            verdict(h < 0.1)
        );
    }
    if let Some(d) = overhead("mem_per_conn_bytes") {
        println!(
            "target user-space memory ≤ 128 B per connection over raw, counted from before the listener is built: {} ({d:.0} B; kernel: {:.0} B more in epoll)",
            verdict(d <= 128.0),
            overhead("kernel_epoll_bytes_per_conn").unwrap_or(f64::NAN)
        );
    }
    if let Some(p99) = get("fin_detect_p99_us", "hygiene") {
        println!(
            "target FIN detection p99 ≤ 1 ms with {} registered: {} ({p99:.0} µs)",
            plan.n,
            verdict(p99 <= 1000.0)
        );
    }
    if let (Some(max), Some(detected), Some(sent)) = (
        get("fin_burst_max_ms", "hygiene"),
        get("fin_burst_detected", "hygiene"),
        get("fin_burst_sent", "hygiene"),
    ) {
        println!(
            "target {sent:.0} simultaneous FINs all detected within 250 ms: {} ({detected:.0} detected, slowest {max:.1} ms)",
            verdict(detected == sent && max <= 250.0)
        );
    }
    if let (Some(p99), Some(early), Some(measured)) = (
        get("reap_late_p99_ms", "hygiene"),
        get("reap_early", "hygiene"),
        get("reap_measured", "hygiene"),
    ) {
        println!(
            "target reap p99 ≤ 20 ms late, never early: {} (p99 {p99:.1} ms, {early:.0} early of {measured:.0})",
            verdict(p99 <= 20.0 && early == 0.0)
        );
    }
    println!("note: load average at end {}", load_average());
}

/// Runs one server process; its `m <figure> <value>` lines.
fn run_server(contender: &str, plan: &Plan) -> Vec<(String, f64)> {
    let mut child = common::self_command("server")
        .env("CONTENDER", contender)
        .env("N", plan.n.to_string())
        .env("IDLE_SECS", plan.idle_secs.to_string())
        .env("SEQUENTIAL", plan.sequential.to_string())
        .env("BURST", plan.burst.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut out = Vec::new();
    for line in io::BufReader::new(stdout).lines() {
        let line = line.expect("server output");
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["m", key, value] => out.push((key.to_string(), value.parse().unwrap_or(f64::NAN))),
            _ => println!("[{contender}] {line}"),
        }
    }
    let status = child.wait().expect("server");
    assert!(status.success(), "{contender} server failed: {status}");
    out
}
