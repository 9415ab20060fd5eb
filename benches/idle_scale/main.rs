//! Idle connections at scale: what supervision costs while nothing happens, and how fast
//! and how precisely it acts when many peers leave at once.
//!
//! ```text
//! cargo bench --bench idle_scale                  # 15,000 connections
//! cargo bench --bench idle_scale -- --quick       # 5,000 connections
//! cargo bench --bench idle_scale -- --n 10000     # any other count
//! cargo bench --bench idle_scale -- --sizes 1000,15000,100000   # the cost curve
//! ```
//!
//! With `--sizes` the whole run repeats at each count, and a last table (`curve …` lines,
//! `value curve_<figure>_n<count> <contender> <number>`) puts side by side what should
//! stay flat as connections grow: FIN detection p99, reap lateness p99, memory per
//! connection over raw, idle CPU. Past 20,000 connections the descriptor limit is raised
//! (root: up to `fs.nr_open`), and the client spreads its connections over source
//! addresses `127.<run>.x.y`, 1,000 each, a fresh range per server run, so that neither
//! the ephemeral ports of one address nor the `TIME_WAIT`s of the run before run out.
//!
//! `RLIMIT_NOFILE` is capped at 20,000 per process unless raised, so this binary plays three roles
//! (chosen by the `TCP_HYGIENE_BENCH_ROLE` environment variable): the orchestrator runs
//! one server process per contender, each in a fresh process so RSS and CPU time are its
//! own, and each server runs its clients in a child process. Servers hold their accepted
//! streams and never poll them. Contenders: `raw` tokio streams (the library's default
//! socket options set by hand), `hygiene` (the defaults, `close_wait_timeout` 1 s) and
//! `hygiene_timeouts` (the same with `idle_timeout`, `read_idle_timeout` and
//! `write_idle_timeout` at 60 s), the last twice: holding, then in the `looks` phase.
//!
//! Figures (`value <figure> <contender> <number>`):
//!
//! - `mem_per_conn_bytes`: heap bytes live per connection (a counting global allocator:
//!   requested sizes, so malloc's own per-chunk overhead is extra; `allocs_per_conn`
//!   says how many chunks), counted from before the listener is built, so that what the
//!   library allocates for a listener (supervisor, pages of slots) is spread over the
//!   connections it holds; `rss_per_conn_bytes` as a cross-check, and for `hygiene` the
//!   kernel-side epoll registrations of the FIN watcher (`/sys/kernel/slab`).
//! - `idle_cpu_pct`: process CPU time (`CLOCK_PROCESS_CPUTIME_ID`, what `getrusage` sums)
//!   over the idle window, in percent of one core; `idle_wakeups`: context switches of
//!   all threads in that window. For `hygiene_timeouts` no deadline falls in that window
//!   (they are 60 s away, longer on a machine slow to accept; a window that reached one
//!   reports nothing), so it is the cost between deadlines; `look_us` is the cost of
//!   the one look per connection that each timeout takes (see `looks`), and
//!   `idle_cpu_pct_per_timeout` the average over one 60 s timeout, its looks included:
//!   `idle_cpu_pct + n × look_us / 60 s`.
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
//! `server` (a server process: hold and measure, then `fin`'s FIN and reap phases, or
//! `looks`), `client` (the client process), `alloc` (the counting allocator), `probes`
//! (what a process measures about itself) and `report` (the summary and targets);
//! `../common` is shared with the other benches.

mod alloc;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod fin;
mod lines;
mod looks;
mod probes;
mod report;
mod server;

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::process::Stdio;
use std::time::Duration;

use common::host::load_average;
use common::{Args, Mode};

const CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
const BURST: usize = 1000;
/// `idle_timeout`, `read_idle_timeout` and `write_idle_timeout` of `hygiene_timeouts`.
const TIMEOUTS: Duration = Duration::from_secs(60);

/// Every server's figures, by (figure, contender).
type Results = HashMap<(String, String), f64>;

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
    /// The timeouts in the `looks` phase: short, so that a deadline falls in its window.
    look_timeout_secs: u64,
    /// The timeouts of `hygiene_timeouts` in the `hold` phase: [`TIMEOUTS`], or longer if
    /// accepting takes so long that a deadline would fall in the idle window.
    hold_timeout_secs: u64,
}

fn main() {
    match common::role().as_deref() {
        Some("server") => return server::main(),
        Some("client") => return client::main(),
        _ => {}
    }
    let args = Args::from_env();
    let sizes: Vec<usize> = match args.value::<String>("--sizes") {
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim().parse().unwrap_or_else(|_| {
                    eprintln!(
                        "--sizes: not a connection count: {n:?} (e.g. --sizes 1000,15000,100000)"
                    );
                    std::process::exit(2)
                })
            })
            .collect(),
        None => Vec::new(),
    };
    if sizes.is_empty() {
        run_plan(&args, None, &mut 0);
        return;
    }
    let mut run = 0;
    let mut curve = Vec::new();
    for &n in &sizes {
        println!("\n===== {n} connections =====");
        // Each server and client process holds `n` descriptors; past the hard limit only
        // a process with CAP_SYS_RESOURCE may raise it (its children inherit the right).
        let limit = common::host::raise_nofile_for(n);
        if limit < common::host::nofile_for(n) {
            println!(
                "note: {n} connections need RLIMIT_NOFILE ≥ {}; the limit here is {limit} and this process may not raise it (no CAP_SYS_RESOURCE): skipped",
                common::host::nofile_for(n)
            );
            continue;
        }
        curve.push((n, run_plan(&args, Some(n), &mut run)));
    }
    report::curve(&curve);
}

/// One run of every contender at the plan's size (`n` overrides it); its figures.
/// `run` numbers the server processes across the whole invocation.
fn run_plan(args: &Args, n: Option<usize>, run: &mut usize) -> Results {
    let mode = args.mode();
    let mut plan = match mode {
        Mode::Smoke => Plan {
            n: 300,
            idle_secs: 1,
            sequential: 20,
            burst: 100,
            look_timeout_secs: 3,
            hold_timeout_secs: TIMEOUTS.as_secs(),
        },
        Mode::Quick => Plan {
            n: 5000,
            idle_secs: 10,
            sequential: 200,
            burst: BURST,
            look_timeout_secs: 5,
            hold_timeout_secs: TIMEOUTS.as_secs(),
        },
        Mode::Full => Plan {
            n: 15_000,
            idle_secs: 10,
            sequential: 500,
            burst: BURST,
            look_timeout_secs: 5,
            hold_timeout_secs: TIMEOUTS.as_secs(),
        },
    };
    if let Some(n) = n.or_else(|| args.value("--n")) {
        plan.n = n;
    }
    // The looks phase needs every connection accepted (and touched) before the first
    // deadline: about 10 s for 100,000 here.
    plan.look_timeout_secs = plan.look_timeout_secs.max(5 + (plan.n / 5000) as u64);
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

    let mut results = Results::default();
    for (contender, phase) in [
        ("raw", "hold"),
        ("hygiene", "hold"),
        ("hygiene_timeouts", "hold"),
        ("hygiene_timeouts", "looks"),
    ] {
        // Every connection accepted (and for the looks touched) before the first deadline:
        // on this project's VMs the planned figures are enough; a slower machine (an
        // emulated one, `vm.sh`) accepts more slowly, and its timeouts must wait longer.
        let slowest = slowest_accept(&results);
        match phase {
            "looks" => {
                // Its own accept may be slower than the holds' (seen under emulation: up
                // to 1.8 times), and touching every connection takes a while more.
                plan.look_timeout_secs = plan
                    .look_timeout_secs
                    .max((3.0 * slowest + 3.0).ceil() as u64);
            }
            _ => {
                plan.hold_timeout_secs = TIMEOUTS
                    .as_secs()
                    .max((3.0 * slowest).ceil() as u64 + plan.idle_secs + 10);
            }
        }
        for (key, value) in run_server(contender, phase, &plan, *run) {
            results.insert((key, contender.to_string()), value);
        }
        *run += 1;
    }
    report::print(&mut results, &plan);
    println!("note: load average at end {}", load_average());
    results
}

/// The slowest accept of all `n` connections in the server runs so far at this size, in
/// seconds (0 before the first).
fn slowest_accept(results: &Results) -> f64 {
    results
        .iter()
        .filter(|((key, _), _)| key == "accept_s")
        .map(|(_, &secs)| secs)
        .fold(0.0, f64::max)
}

/// Runs one server process; its `m <figure> <value>` lines.
fn run_server(contender: &str, phase: &str, plan: &Plan, run: usize) -> Vec<(String, f64)> {
    let timeouts = match phase {
        "looks" => plan.look_timeout_secs,
        _ => plan.hold_timeout_secs,
    };
    let mut child = common::self_command("server")
        .env("CONTENDER", contender)
        .env("PHASE", phase)
        .env("TIMEOUT_SECS", timeouts.to_string())
        .env("N", plan.n.to_string())
        .env("IDLE_SECS", plan.idle_secs.to_string())
        .env("SEQUENTIAL", plan.sequential.to_string())
        .env("BURST", plan.burst.to_string())
        .env("RUN", run.to_string())
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
