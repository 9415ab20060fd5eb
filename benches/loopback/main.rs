//! Loopback benchmarks: what `tcp_hygiene::TcpStream` costs next to a raw
//! `tokio::net::TcpStream` and next to `tokio_io_timeout::TimeoutStream`.
//!
//! ```text
//! cargo bench --bench loopback               # full run (a few minutes)
//! cargo bench --bench loopback -- --quick    # provisional numbers, under a minute
//! cargo bench --bench loopback --features axum,metrics   # with the http section and
//!                                                        # the metrics contender
//! ```
//!
//! # What is measured
//!
//! End to end, on current-thread (`_ct`) and multi-thread (`_mt`, 2 workers) runtimes,
//! with the contender on the server side and a raw tokio client:
//!
//! - `throughput`: the server writes 64 KiB chunks, the client reads them (GB/s);
//! - `pingpong_p50`, `pingpong_p99`: 64-byte echo round trip (µs); `pingpong_*_timer`:
//!   the same with a far-off timer armed in the runtime for every contender (see
//!   `end_to_end` for why);
//! - `accept`: a bounded burst of connect + close, accepts per second;
//! - `connect`: the same burst with the contender on the client side (the library's
//!   `Connector`; raw tokio and tokio-io-timeout connect and set the same options by
//!   hand) and a raw tokio server, connects per second;
//! - `http` (with `--features axum`): requests per second through axum, the library's
//!   serve and `axum::serve` over the library's listener against `axum::serve` over
//!   tokio's (`ratio http_rps …`; see `http`);
//! - `https` (with `--features axum,tls`): the same over TLS, HTTP/1.1 and HTTP/2, the
//!   library's serve with `tls` against tokio-rustls and hyper-util by hand
//!   (`ratio https_rps_h1 …`, `https_rps_h2`; see `https`).
//!
//! Clients run in the same runtime as the server: there a round trip (~15 µs here) is
//! user-space and kernel work, where a client thread of its own puts it at ~85 µs ±30 %,
//! most of it this VM's cross-CPU wakeup latency, which would drown the difference sought.
//!
//! Contenders: `raw` (tokio's stream; keepalive, `TCP_USER_TIMEOUT` and nodelay set by
//! hand, exactly what the library sets), `hygiene` (every timeout enabled) and
//! `tokio-io-timeout` (read and write timeouts; socket options set by hand like `raw`),
//! and with `--features metrics` `hygiene+metrics` (the same, its metrics registered with
//! a Prometheus recorder that receives every update; end to end only, since metrics touch
//! no poll: `cargo bench --bench loopback --features metrics`).
//! Shared 2-core VMs vary by ±20–30 % between identical runs, so contenders run
//! interleaved in rounds (the order rotates each round), each figure is divided by the
//! raw figure of the same round, and the median and spread (min..max) of those ratios
//! are reported: `ratio <figure> <contender> <median>`.
//!
//! Per poll: `poll_read` (64-byte reads) and `poll_write` (64-byte writes) called
//! directly with a no-op waker, on one CPU, while data is always ready. The three
//! contenders poll the very same kernel socket (the raw and tokio-io-timeout streams
//! are duplicates of the descriptor that `hygiene` accepted), so they differ only in
//! user-space code; the peer refills or drains between timed batches, never during one.
//! Reported as `value poll_overhead_ns <contender> <median>` (contender minus raw, per
//! poll), and as user-space instruction counts per poll from `valgrind --tool=callgrind`
//! (`value poll_instructions …`), which are exact and immune to noise.
//!
//! Positional arguments select sections by substring (`throughput`, `pingpong`, `accept`,
//! `connect`, `poll`, `callgrind`, `http`, `https`), e.g. `-- --quick accept`; `LOOPBACK_CONTENDERS=hygiene` runs only
//! the named contenders (for profiling one of them, e.g. under `perf` or `strace -c`).
//!
//! # Layout
//!
//! `contenders` (the server sides), `end_to_end`, `per_poll` (timed), `callgrind`
//! (instruction counts, in a copy of this binary under valgrind), `http` and `report`
//! (tables, `ratio`/`value` lines, targets); `../common` is shared with the other benches.

mod callgrind;
#[cfg(all(feature = "axum", feature = "tls"))]
#[path = "../../tests/support/certs.rs"]
mod certs;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod contenders;
mod end_to_end;
#[cfg(feature = "axum")]
mod http;
#[cfg(feature = "axum")]
mod http_rounds;
#[cfg(all(feature = "axum", feature = "tls"))]
mod https;
mod per_poll;
mod report;

use std::time::Instant;

/// Bytes per ping, and per polled read or write.
const SMALL: usize = 64;

use common::host::load_average;
use common::{Args, Mode};

#[derive(Debug, Clone)]
struct Params {
    /// Substrings of the sections to run (`throughput`, `pingpong`, `accept`, `connect`,
    /// `poll`, `callgrind`); empty runs all.
    filters: Vec<String>,
    rounds: usize,
    throughput_bytes: u64,
    pingpong_iters: usize,
    accept_burst: usize,
    accept_concurrency: usize,
    poll_rounds: usize,
    poll_batches: usize,
    callgrind_polls: usize,
    callgrind: bool,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    http_rounds: usize,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    http_requests: usize,
}

impl Params {
    fn new(mode: Mode) -> Self {
        match mode {
            // Prove it works, fast.
            Mode::Smoke => Self {
                filters: Vec::new(),
                rounds: 1,
                throughput_bytes: 4 << 20,
                pingpong_iters: 100,
                accept_burst: 50,
                accept_concurrency: 8,
                poll_rounds: 5,
                poll_batches: 1,
                callgrind_polls: 0,
                callgrind: false,
                http_rounds: 1,
                http_requests: 20,
            },
            Mode::Quick => Self {
                filters: Vec::new(),
                rounds: 15,
                throughput_bytes: 128 << 20,
                pingpong_iters: 3000,
                accept_burst: 500,
                accept_concurrency: 32,
                poll_rounds: 800,
                poll_batches: 1,
                callgrind_polls: 500,
                callgrind: true,
                http_rounds: 9,
                http_requests: 400,
            },
            Mode::Full => Self {
                filters: Vec::new(),
                rounds: 31,
                throughput_bytes: 256 << 20,
                pingpong_iters: 10_000,
                accept_burst: 1000,
                accept_concurrency: 32,
                poll_rounds: 4000,
                poll_batches: 1,
                callgrind_polls: 1000,
                callgrind: true,
                http_rounds: 21,
                http_requests: 1500,
            },
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| section.contains(f.as_str()))
    }
}

fn main() {
    if common::role().as_deref() == Some(callgrind::ROLE) {
        callgrind::child();
        return;
    }
    let args = Args::from_env();
    let mode = args.mode();
    let mut params = Params::new(mode);
    params.filters = args.positional();
    let started = Instant::now();
    println!(
        "loopback bench ({}): {} rounds, contenders interleaved, ratios to raw within each round",
        mode.label(),
        params.rounds
    );
    println!("load average at start: {}", load_average());

    let mut rows = Vec::new();
    for (suffix, rt) in [
        ("ct", common::current_thread_runtime()),
        ("mt", common::multi_thread_runtime()),
    ] {
        rows.extend(end_to_end::run(&rt, suffix, &params));
    }
    let e2e_done = started.elapsed();

    let polls = if params.runs("poll") {
        per_poll::timed(&params)
    } else {
        report::PollResults::default()
    };
    let instructions = if params.callgrind && params.runs("callgrind") {
        callgrind::run(&params)
    } else {
        Vec::new()
    };

    #[cfg(feature = "axum")]
    let http = if params.runs("http") {
        http::run(params.http_rounds, params.http_requests)
    } else {
        Vec::new()
    };
    #[cfg(not(feature = "axum"))]
    let http = vec!["note: the http section runs with `--features axum`".to_string()];
    #[cfg(all(feature = "axum", feature = "tls"))]
    let https = if params.runs("https") {
        https::run(params.http_rounds, params.http_requests)
    } else {
        Vec::new()
    };
    #[cfg(not(all(feature = "axum", feature = "tls")))]
    let https = vec!["note: the https section runs with `--features axum,tls`".to_string()];

    report::print(&rows, &polls, &instructions);
    println!();
    for line in http.into_iter().chain(https) {
        println!("{line}");
    }
    println!(
        "note: end-to-end took {:.1} s, all {:.1} s; load average at end: {}",
        e2e_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
