//! Loopback benchmarks: what `tcp_hygiene::TcpStream` costs next to a raw
//! `tokio::net::TcpStream` and next to `tokio_io_timeout::TimeoutStream`.
//!
//! ```text
//! cargo bench --bench loopback               # full run (a few minutes)
//! cargo bench --bench loopback -- --quick    # provisional numbers, under a minute
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
//! - `accept`: a bounded burst of connect + close, accepts per second.
//!
//! Clients run in the same runtime as the server: there a round trip (~15 µs here) is
//! user-space and kernel work, where a client thread of its own puts it at ~85 µs ±30 %,
//! most of it this VM's cross-CPU wakeup latency, which would drown the difference sought.
//!
//! Contenders: `raw` (tokio's stream; keepalive, `TCP_USER_TIMEOUT` and nodelay set by
//! hand, exactly what the library sets), `hygiene` (every timeout enabled) and
//! `tokio-io-timeout` (read and write timeouts; socket options set by hand like `raw`).
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
//! `poll`, `callgrind`), e.g. `-- --quick accept`; `LOOPBACK_CONTENDERS=hygiene` runs only
//! the named contenders (for profiling one of them, e.g. under `perf` or `strace -c`).
#![allow(unsafe_code)] // sched_setaffinity, geteuid: bench-only, see the SAFETY comments.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// Set in the environment of the copy of this binary that runs under callgrind.
const ROLE_ENV: &str = "TCP_HYGIENE_BENCH_ROLE";
const ROLE_CALLGRIND: &str = "callgrind-polls";

/// Long enough never to fire during a run; the point is that the timers exist.
const TIMEOUT: Duration = Duration::from_secs(300);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;
const USER_TIMEOUT: Duration = Duration::from_secs(120);

const CHUNK: usize = 64 * 1024;
const SMALL: usize = 64;
/// Calls of `read_polls`/`write_polls` so far: callgrind dumps once after each.
static LOOPS: AtomicUsize = AtomicUsize::new(0);

/// Polls per timed batch (reads: one 64 KiB refill per batch).
const READ_BATCH: usize = 1000;
/// Polls per timed batch (writes: the send path must never fill up within a batch).
const WRITE_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Raw,
    Hygiene,
    TokioIoTimeout,
}

impl Contender {
    const ALL: [Contender; 3] = [
        Contender::Raw,
        Contender::Hygiene,
        Contender::TokioIoTimeout,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw",
            Contender::Hygiene => "hygiene",
            Contender::TokioIoTimeout => "tokio-io-timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The contenders of round `round`, rotated so that none always runs first; only
    /// those named in `LOOPBACK_CONTENDERS` (comma-separated) if it is set, for profiling
    /// one contender alone.
    fn order(round: usize) -> Vec<Contender> {
        let mut all = Self::ALL;
        all.rotate_left(round % Self::ALL.len());
        let only = std::env::var("LOOPBACK_CONTENDERS").ok();
        all.into_iter()
            .filter(|c| {
                only.as_deref()
                    .is_none_or(|o| o.split(',').any(|n| n == c.name()))
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Params {
    /// Substrings of the sections to run (`throughput`, `pingpong`, `accept`, `poll`,
    /// `callgrind`); empty runs all.
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
}

impl Params {
    fn new(quick: bool, smoke: bool) -> Self {
        if smoke {
            // `cargo test --all-targets` runs this binary without `--bench`: prove it
            // works, fast.
            return Self {
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
            };
        }
        if quick {
            Self {
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
            }
        } else {
            Self {
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
            }
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| section.contains(f.as_str()))
    }
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok(ROLE_CALLGRIND) {
        callgrind_child();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut params = Params::new(quick, smoke);
    params.filters = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    let started = Instant::now();
    println!(
        "loopback bench ({}): {} rounds, contenders interleaved, ratios to raw within each round",
        if smoke {
            "smoke test: run with `cargo bench` for numbers"
        } else if quick {
            "--quick"
        } else {
            "full"
        },
        params.rounds
    );
    println!("load average at start: {}", load_average());

    let mut rows = Vec::new();
    for (suffix, rt) in [("ct", current_thread()), ("mt", multi_thread())] {
        rows.extend(end_to_end(&rt, suffix, &params));
    }
    let e2e_done = started.elapsed();

    let polls = if params.runs("poll") {
        per_poll_timed(&params)
    } else {
        PollResults {
            table: Vec::new(),
            values: Vec::new(),
        }
    };
    let cg = if params.callgrind && params.runs("callgrind") {
        callgrind(&params)
    } else {
        Vec::new()
    };

    println!();
    print_table(&rows);
    println!();
    println!("per poll (data always ready, one CPU, same kernel socket for every contender; ns per poll, Δ = contender − raw, medians over rounds):");
    for line in &polls.table {
        println!("  {line}");
    }
    if !cg.is_empty() {
        println!("user-space instructions per poll (callgrind):");
        for (op, c, ir) in &cg {
            println!("  {op:<5} {:<17} {ir:>8.1}", c.name());
        }
    }
    println!();
    for row in &rows {
        if row.contender != Contender::Raw {
            println!(
                "ratio {} {} {:.3}",
                row.figure,
                row.contender.name(),
                row.ratio_median
            );
        }
    }
    for (name, c, v) in &polls.values {
        println!("value {name} {} {v:.2}", c.name());
    }
    for (op, c, ir) in &cg {
        println!("value poll_{op}_instructions {} {ir:.1}", c.name());
    }
    for c in [Contender::Hygiene, Contender::TokioIoTimeout] {
        let raw: f64 = cg
            .iter()
            .filter(|r| r.1 == Contender::Raw)
            .map(|r| r.2)
            .sum();
        let mine: f64 = cg.iter().filter(|r| r.1 == c).map(|r| r.2).sum();
        let ops = cg.iter().filter(|r| r.1 == c).count();
        if ops > 0 {
            println!(
                "value poll_overhead_instructions {} {:.1}",
                c.name(),
                (mine - raw) / ops as f64
            );
        }
    }
    print_targets(&rows, &polls.values);
    println!(
        "note: end-to-end took {:.1} s, all {:.1} s; load average at end: {}",
        e2e_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

// ---------------------------------------------------------------------------------------
// Contenders on the server side.

/// A listener of one contender; its streams are what the benchmarks measure.
trait Server: Send + Sync + Sized + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn bind() -> impl Future<Output = Self> + Send;
    fn local_addr(&self) -> SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// What the library sets on every accepted socket, set by hand for the other contenders.
fn set_options_by_hand(stream: &TcpStream) {
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    sock.set_tcp_keepalive(&keepalive).expect("keepalive");
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
        .expect("user timeout");
    stream.set_nodelay(true).expect("nodelay");
}

fn hygiene_builder() -> tcp_hygiene::Builder {
    let mut b = tcp_hygiene::Builder::new();
    b.close_wait_timeout(TIMEOUT)
        .fin_wait_timeout(TIMEOUT)
        .idle_timeout(TIMEOUT)
        .read_idle_timeout(TIMEOUT)
        .write_idle_timeout(TIMEOUT)
        .first_byte_timeout(TIMEOUT)
        .max_connection_age(TIMEOUT * 10)
        .keepalive(
            tcp_hygiene::Keepalive::new()
                .with_idle(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES),
        )
        .user_timeout(USER_TIMEOUT)
        .nodelay(true);
    b
}

struct RawServer(TcpListener);

impl Server for RawServer {
    type Stream = TcpStream;

    async fn bind() -> Self {
        Self(TcpListener::bind("127.0.0.1:0").await.expect("bind"))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("local_addr")
    }

    async fn accept(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.0.accept().await?;
        set_options_by_hand(&stream);
        Ok(stream)
    }
}

struct HygieneServer(tcp_hygiene::TcpListener);

impl Server for HygieneServer {
    type Stream = tcp_hygiene::TcpStream;

    async fn bind() -> Self {
        Self(hygiene_builder().bind("127.0.0.1:0").await.expect("bind"))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("local_addr")
    }

    async fn accept(&self) -> io::Result<tcp_hygiene::TcpStream> {
        Ok(self.0.accept().await?.0)
    }
}

struct TioServer(TcpListener);

fn timeout_stream(stream: TcpStream) -> Pin<Box<TimeoutStream<TcpStream>>> {
    let mut stream = TimeoutStream::new(stream);
    stream.set_read_timeout(Some(TIMEOUT));
    stream.set_write_timeout(Some(TIMEOUT));
    Box::pin(stream)
}

impl Server for TioServer {
    type Stream = Pin<Box<TimeoutStream<TcpStream>>>;

    async fn bind() -> Self {
        Self(TcpListener::bind("127.0.0.1:0").await.expect("bind"))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("local_addr")
    }

    async fn accept(&self) -> io::Result<Self::Stream> {
        let (stream, _) = self.0.accept().await?;
        set_options_by_hand(&stream);
        Ok(timeout_stream(stream))
    }
}

/// Runs the generic benchmark `$f(server, args…)` with the server of contender `$c`.
macro_rules! with_server {
    ($c:expr, $f:ident ( $($arg:expr),* )) => {
        match $c {
            Contender::Raw => $f(RawServer::bind().await, $($arg),*).await,
            Contender::Hygiene => $f(HygieneServer::bind().await, $($arg),*).await,
            Contender::TokioIoTimeout => $f(TioServer::bind().await, $($arg),*).await,
        }
    };
}

// ---------------------------------------------------------------------------------------
// End to end.

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One figure of one contender: the median of its values and of its ratios to raw.
#[derive(Debug)]
struct Row {
    figure: String,
    contender: Contender,
    unit: &'static str,
    higher_is_better: bool,
    median: f64,
    ratio_median: f64,
    ratio_min: f64,
    ratio_max: f64,
}

/// `values[round][contender]` → one row per contender.
fn rows(figure: &str, unit: &'static str, higher_is_better: bool, values: &[[f64; 3]]) -> Vec<Row> {
    if values.is_empty() {
        return Vec::new();
    }
    Contender::ALL
        .iter()
        .map(|&c| {
            let mine: Vec<f64> = values.iter().map(|r| r[c.index()]).collect();
            let ratios: Vec<f64> = values
                .iter()
                .map(|r| r[c.index()] / r[Contender::Raw.index()])
                .collect();
            Row {
                figure: figure.to_string(),
                contender: c,
                unit,
                higher_is_better,
                median: median(&mine),
                ratio_median: median(&ratios),
                ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

fn end_to_end(rt: &Runtime, suffix: &str, p: &Params) -> Vec<Row> {
    let mut out = Vec::new();

    let mut values = Vec::new();
    for round in 0..p.rounds * usize::from(p.runs("throughput")) {
        let mut r = [0.0; 3];
        for c in Contender::order(round) {
            r[c.index()] = rt.block_on(async { with_server!(c, throughput(p.throughput_bytes)) });
        }
        values.push(r);
    }
    out.extend(rows(&format!("throughput_{suffix}"), "GB/s", true, &values));

    // `timer`: the same with one far-off tokio timer armed in the runtime for every
    // contender, as in nearly every real server. It separates the library's own cost
    // from that of tokio's time driver, which the supervisor's single deadline timer
    // switches on (each park of the runtime then also services the timer wheel).
    for (variant, timer) in [("", false), ("timer_", true)] {
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for round in 0..p.rounds * usize::from(p.runs(&format!("pingpong_{variant}"))) {
            let (mut a, mut b) = ([0.0; 3], [0.0; 3]);
            for c in Contender::order(round) {
                let (p50, p99) =
                    rt.block_on(async { with_server!(c, pingpong(p.pingpong_iters, timer)) });
                a[c.index()] = p50;
                b[c.index()] = p99;
            }
            p50s.push(a);
            p99s.push(b);
        }
        out.extend(rows(
            &format!("pingpong_p50_{variant}{suffix}"),
            "µs",
            false,
            &p50s,
        ));
        out.extend(rows(
            &format!("pingpong_p99_{variant}{suffix}"),
            "µs",
            false,
            &p99s,
        ));
    }

    let mut values = Vec::new();
    for round in 0..p.rounds * usize::from(p.runs("accept")) {
        let mut r = [0.0; 3];
        for c in Contender::order(round) {
            r[c.index()] = rt.block_on(async {
                with_server!(c, accept_rate(p.accept_burst, p.accept_concurrency))
            });
        }
        values.push(r);
    }
    out.extend(rows(&format!("accept_{suffix}"), "k/s", true, &values));
    out
}

/// The server writes `total` bytes in 64 KiB writes; GB/s as seen by the reading client.
async fn throughput<S: Server>(server: S, total: u64) -> f64 {
    let addr = server.local_addr();
    let writer = tokio::spawn(async move {
        let mut stream = server.accept().await.expect("accept");
        let chunk = vec![0x5a_u8; CHUNK];
        let mut sent = 0;
        while sent < total {
            stream.write_all(&chunk).await.expect("write");
            sent += CHUNK as u64;
        }
        stream.shutdown().await.expect("shutdown");
    });
    let reader = tokio::spawn(async move {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut buf = vec![0_u8; 4 * CHUNK];
        let mut got = 0_u64;
        let start = Instant::now();
        loop {
            match client.read(&mut buf).await.expect("read") {
                0 => break,
                n => got += n as u64,
            }
        }
        (got, start.elapsed())
    });
    let (got, elapsed) = reader.await.expect("reader");
    writer.await.expect("writer");
    assert!(got >= total, "short transfer: {got} of {total}");
    got as f64 / elapsed.as_secs_f64() / 1e9
}

/// 64-byte echo through the server's stream; (p50, p99) round trip in µs. With `timer`,
/// a sleeping task keeps a timer armed in the runtime meanwhile.
async fn pingpong<S: Server>(server: S, iters: usize, timer: bool) -> (f64, f64) {
    let addr = server.local_addr();
    let sleeper = timer.then(|| tokio::spawn(tokio::time::sleep(Duration::from_secs(3600))));
    let echo = tokio::spawn(async move {
        let mut stream = server.accept().await.expect("accept");
        let mut buf = [0_u8; SMALL];
        while stream.read_exact(&mut buf).await.is_ok() {
            stream.write_all(&buf).await.expect("echo");
        }
    });
    let client = tokio::spawn(async move {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        let mut buf = [7_u8; SMALL];
        let warmup = (iters / 10).max(10);
        let mut rtts = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let start = Instant::now();
            client.write_all(&buf).await.expect("ping");
            client.read_exact(&mut buf).await.expect("pong");
            if i >= warmup {
                rtts.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        rtts
    });
    let mut rtts = client.await.expect("client");
    echo.await.expect("echo");
    if let Some(sleeper) = sleeper {
        sleeper.abort();
    }
    rtts.sort_by(f64::total_cmp);
    (percentile(&rtts, 0.50), percentile(&rtts, 0.99))
}

/// `n` clients connect and close at once, at most `concurrency` of them connected and not
/// yet accepted (tokio's listen backlog is 128: a fuller queue drops SYNs and costs a
/// 1 s retransmission); the server accepts (applying its options and registration) and
/// drops. Thousands of accepts per second, until the server has accepted all of them.
async fn accept_rate<S: Server>(server: S, n: usize, concurrency: usize) -> f64 {
    let addr = server.local_addr();
    let slots = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let acceptor = tokio::spawn({
        let slots = slots.clone();
        async move {
            for _ in 0..n {
                drop(server.accept().await.expect("accept"));
                slots.add_permits(1);
            }
            start.elapsed()
        }
    });
    let clients: Vec<_> = (0..concurrency)
        .map(|i| {
            let slots = slots.clone();
            tokio::spawn(async move {
                for _ in (i..n).step_by(concurrency) {
                    slots.acquire().await.expect("semaphore").forget();
                    drop(TcpStream::connect(addr).await.expect("connect"));
                }
            })
        })
        .collect();
    let elapsed = acceptor.await.expect("acceptor");
    for client in clients {
        client.await.expect("client");
    }
    n as f64 / elapsed.as_secs_f64() / 1e3
}

/// The issue's targets against this run's medians: `target <what> met|MISSED (<numbers>)`.
fn print_targets(rows: &[Row], polls: &[(&'static str, Contender, f64)]) {
    let ratio = |figure: &str, c: Contender| {
        rows.iter()
            .find(|r| r.figure == figure && r.contender == c)
            .map(|r| r.ratio_median)
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let limits: [(&str, f64, bool); 3] = [
        ("throughput", 0.97, true),
        ("pingpong_p50", 1.03, false),
        ("accept", 0.90, true),
    ];
    for suffix in ["ct", "mt"] {
        for (figure, limit, higher_is_better) in limits {
            let name = format!("{figure}_{suffix}");
            let (Some(h), Some(t)) = (
                ratio(&name, Contender::Hygiene),
                ratio(&name, Contender::TokioIoTimeout),
            ) else {
                continue;
            };
            let within = if higher_is_better {
                h >= limit
            } else {
                h <= limit
            };
            let no_worse = if higher_is_better { h >= t } else { h <= t };
            let op = if higher_is_better { "≥" } else { "≤" };
            println!(
                "target {name} {op} {limit}: {} ({h:.3}); no worse than tokio-io-timeout: {} ({t:.3})",
                verdict(within),
                verdict(no_worse)
            );
        }
    }
    let overhead = |c: Contender| {
        polls
            .iter()
            .find(|(n, pc, _)| *n == "poll_overhead_ns" && *pc == c)
            .map(|p| p.2)
    };
    if let (Some(h), Some(t)) = (
        overhead(Contender::Hygiene),
        overhead(Contender::TokioIoTimeout),
    ) {
        println!(
            "target poll_overhead_ns ≤ 10 and < tokio-io-timeout: {} ({h:.2} vs {t:.2})",
            verdict(h <= 10.0 && h < t)
        );
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:<17} {:>10} {:<5} {:>7} {:>15}",
        "figure", "contender", "median", "unit", "ratio", "ratio spread"
    );
    for row in rows {
        let better = if row.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        if row.contender == Contender::Raw {
            println!(
                "{:<22} {:<17} {:>10.2} {:<5} {:>7} {:>15}   ({better})",
                row.figure,
                row.contender.name(),
                row.median,
                row.unit,
                "1",
                ""
            );
        } else {
            println!(
                "{:<22} {:<17} {:>10.2} {:<5} {:>7.3} {:>15}",
                row.figure,
                row.contender.name(),
                row.median,
                row.unit,
                row.ratio_median,
                format!("{:.3}..{:.3}", row.ratio_min, row.ratio_max)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Per poll.

/// One kernel socket, polled through each contender's stream type.
struct PollRig {
    rt: Runtime,
    peer: std::net::TcpStream,
    raw: TcpStream,
    hygiene: tcp_hygiene::TcpStream,
    tio: Pin<Box<TimeoutStream<TcpStream>>>,
    /// Bytes the peer wrote that no contender has read yet.
    queued: usize,
    zeros: Vec<u8>,
    sink: Vec<u8>,
    _listener: tcp_hygiene::TcpListener,
}

impl PollRig {
    fn new() -> Self {
        let rt = current_thread();
        let (listener, hygiene, peer) = rt.block_on(async {
            let listener = hygiene_builder().bind("127.0.0.1:0").await.expect("bind");
            let peer = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            peer.set_nodelay(true).expect("nodelay");
            let (hygiene, _) = listener.accept().await.expect("accept");
            (listener, hygiene, peer)
        });
        let dup = || {
            let fd = hygiene.get_ref().as_fd().try_clone_to_owned().expect("dup");
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true).expect("nonblocking");
            let _guard = rt.enter();
            TcpStream::from_std(std).expect("register")
        };
        let raw = dup();
        let tio = {
            let stream = dup();
            let _guard = rt.enter();
            timeout_stream(stream)
        };
        Self {
            raw,
            hygiene,
            tio,
            peer,
            queued: 0,
            zeros: vec![0; READ_BATCH * SMALL],
            sink: vec![0; WRITE_BATCH * SMALL],
            _listener: listener,
            rt,
        }
    }

    fn tokio_stream(&self, c: Contender) -> &TcpStream {
        match c {
            Contender::Raw => &self.raw,
            Contender::Hygiene => self.hygiene.get_ref(),
            Contender::TokioIoTimeout => self.tio.get_ref(),
        }
    }

    /// Waits (driving the reactor) until tokio knows the socket is readable for `c`.
    fn wait_readable(&self, c: Contender) {
        self.rt
            .block_on(async { self.tokio_stream(c).readable().await })
            .expect("readable");
    }

    fn wait_writable(&self, c: Contender) {
        self.rt
            .block_on(async { self.tokio_stream(c).writable().await })
            .expect("writable");
    }

    /// Runs one batch of `polls` reads through `c`; the time if every poll was ready.
    fn read_batch(&mut self, c: Contender, polls: usize) -> Option<Duration> {
        let need = polls * SMALL;
        if self.queued < need {
            self.peer
                .write_all(&self.zeros[..need - self.queued])
                .expect("refill");
            self.queued = need;
        }
        let _guard = self.rt.enter();
        let start = Instant::now();
        let done = match c {
            Contender::Raw => read_polls(&mut self.raw, polls),
            Contender::Hygiene => read_polls(&mut self.hygiene, polls),
            Contender::TokioIoTimeout => read_polls(&mut self.tio, polls),
        };
        let elapsed = start.elapsed();
        LOOPS.fetch_add(1, Ordering::Relaxed);
        drop(_guard);
        self.queued -= done * SMALL;
        if done < polls {
            self.wait_readable(c);
            return None;
        }
        Some(elapsed)
    }

    /// Runs one batch of `polls` writes through `c`; the peer drains afterwards.
    fn write_batch(&mut self, c: Contender, polls: usize) -> Option<Duration> {
        let _guard = self.rt.enter();
        let start = Instant::now();
        let done = match c {
            Contender::Raw => write_polls(&mut self.raw, polls),
            Contender::Hygiene => write_polls(&mut self.hygiene, polls),
            Contender::TokioIoTimeout => write_polls(&mut self.tio, polls),
        };
        let elapsed = start.elapsed();
        LOOPS.fetch_add(1, Ordering::Relaxed);
        drop(_guard);
        self.peer
            .read_exact(&mut self.sink[..done * SMALL])
            .expect("drain");
        if done < polls {
            self.wait_writable(c);
            return None;
        }
        Some(elapsed)
    }

    /// Brings every contender to the steady state: readiness known, lazy state
    /// initialised, first-poll effects gone.
    fn warm_up(&mut self) {
        for c in Contender::ALL {
            // A failed batch waits for readiness (after the refill, so data is there).
            for _ in 0..3 {
                let _ = self.read_batch(c, READ_BATCH);
                let _ = self.write_batch(c, WRITE_BATCH);
            }
        }
    }
}

/// `polls` reads of 64 bytes; how many completed before the first non-ready poll.
#[inline(never)]
fn read_polls<S: AsyncRead + Unpin>(stream: &mut S, polls: usize) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0_u8; SMALL];
    for i in 0..polls {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *stream).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().len() == SMALL => {}
            Poll::Ready(Ok(())) => panic!("short read: {}", rb.filled().len()),
            Poll::Ready(Err(e)) => panic!("read: {e}"),
            Poll::Pending => return i,
        }
    }
    std::hint::black_box(&buf);
    polls
}

/// `polls` writes of 64 bytes; how many were accepted whole before the first miss.
#[inline(never)]
fn write_polls<S: AsyncWrite + Unpin>(stream: &mut S, polls: usize) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let buf = std::hint::black_box([0x42_u8; SMALL]);
    for i in 0..polls {
        match Pin::new(&mut *stream).poll_write(&mut cx, &buf) {
            Poll::Ready(Ok(SMALL)) => {}
            Poll::Ready(Ok(n)) => panic!("short write: {n}"),
            Poll::Ready(Err(e)) => panic!("write: {e}"),
            Poll::Pending => return i,
        }
    }
    polls
}

struct PollResults {
    table: Vec<String>,
    values: Vec<(&'static str, Contender, f64)>,
}

fn per_poll_timed(p: &Params) -> PollResults {
    std::thread::spawn({
        let p = p.clone();
        move || {
            let cpu = pin_to_last_cpu();
            let mut rig = PollRig::new();
            rig.warm_up();
            // ns per poll, [round][contender], for reads and writes.
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            let mut discarded = 0;
            // Short, paired samples: adjacent batches of different contenders see the
            // same machine, so their difference is far less noisy than either.
            for round in 0..p.poll_rounds {
                let (mut r, mut w) = ([0.0; 3], [0.0; 3]);
                for c in Contender::order(round) {
                    let (mut t, mut n) = (Duration::ZERO, 0);
                    while n < p.poll_batches {
                        match rig.read_batch(c, READ_BATCH) {
                            Some(d) => {
                                t += d;
                                n += 1;
                            }
                            None => discarded += 1,
                        }
                    }
                    r[c.index()] = t.as_nanos() as f64 / (n * READ_BATCH) as f64;
                }
                for c in Contender::order(round) {
                    let (mut t, mut n) = (Duration::ZERO, 0);
                    // Writes cost ~5x more per poll; batches are smaller to keep the
                    // send path from filling up, so take more of them.
                    while n < p.poll_batches * 4 {
                        match rig.write_batch(c, WRITE_BATCH) {
                            Some(d) => {
                                t += d;
                                n += 1;
                            }
                            None => discarded += 1,
                        }
                    }
                    w[c.index()] = t.as_nanos() as f64 / (n * WRITE_BATCH) as f64;
                }
                reads.push(r);
                writes.push(w);
            }
            summarize_polls(&reads, &writes, discarded, cpu)
        }
    })
    .join()
    .expect("per-poll thread")
}

fn summarize_polls(
    reads: &[[f64; 3]],
    writes: &[[f64; 3]],
    discarded: usize,
    cpu: Option<usize>,
) -> PollResults {
    let col = |v: &[[f64; 3]], c: Contender| v.iter().map(|r| r[c.index()]).collect::<Vec<_>>();
    let diff = |v: &[[f64; 3]], c: Contender| {
        v.iter()
            .map(|r| r[c.index()] - r[Contender::Raw.index()])
            .collect::<Vec<_>>()
    };
    let mut table = vec![format!(
        "{} rounds, pinned to CPU {}, {discarded} batches discarded (a poll was not ready)",
        reads.len(),
        cpu.map_or("none (affinity failed)".to_string(), |c| c.to_string())
    )];
    table.push(format!(
        "{:<17} {:>9} {:>9} {:>10} {:>10} {:>10} {:>16} {:>16}",
        "contender",
        "read ns",
        "write ns",
        "read Δ",
        "write Δ",
        "mean Δ",
        "Δ 95% CI",
        "Δ rounds p10..90"
    ));
    let mut values = Vec::new();
    for c in Contender::ALL {
        let (dr, dw) = (diff(reads, c), diff(writes, c));
        let both: Vec<f64> = dr.iter().zip(&dw).map(|(a, b)| (a + b) / 2.0).collect();
        let mut sorted = both.clone();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi) = median_ci(&sorted);
        table.push(format!(
            "{:<17} {:>9.1} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>16} {:>16}",
            c.name(),
            median(&col(reads, c)),
            median(&col(writes, c)),
            median(&dr),
            median(&dw),
            median(&both),
            format!("{lo:.1}..{hi:.1}"),
            format!(
                "{:.0}..{:.0}",
                percentile(&sorted, 0.1),
                percentile(&sorted, 0.9)
            )
        ));
        if c != Contender::Raw {
            values.push(("poll_overhead_ns", c, median(&both)));
            values.push(("poll_read_overhead_ns", c, median(&dr)));
            values.push(("poll_write_overhead_ns", c, median(&dw)));
        }
    }
    PollResults { table, values }
}

/// Pins the calling thread to the last CPU; which one, if it worked.
fn pin_to_last_cpu() -> Option<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    // SAFETY: `set` is a plain bitmask owned by this frame; sched_setaffinity only reads
    // it, and pid 0 means the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    (rc == 0).then_some(cpu)
}

// ---------------------------------------------------------------------------------------
// Instructions per poll, under callgrind.

/// In the copy of this binary that runs under callgrind: every contender's loops, in a
/// fixed order that the parent reads back from our stdout (one dump per loop).
fn callgrind_child() {
    let polls: usize = std::env::var("POLLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .min(READ_BATCH);
    let mut rig = PollRig::new();
    rig.warm_up();
    for round in 0..2 {
        // Round 0 warms up caches of lazily resolved symbols; round 1 is reported.
        for c in Contender::ALL {
            let done = rig.read_batch(c, polls).is_some();
            let seq = LOOPS.load(Ordering::Relaxed);
            println!(
                "cg {seq} read {} {polls} {} {round}",
                c.name(),
                u8::from(done)
            );
            let mut written = 0;
            let mut ok = true;
            while written < polls {
                let n = WRITE_BATCH.min(polls - written);
                ok &= rig.write_batch(c, n).is_some();
                let seq = LOOPS.load(Ordering::Relaxed);
                println!("cg {seq} write {} {n} {} {round}", c.name(), u8::from(ok));
                written += n;
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn have_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_valgrind() -> bool {
    if have_valgrind() {
        return true;
    }
    if !is_root() {
        println!("note: valgrind is not installed and we are not root; skipping instruction counts (apt-get install valgrind)");
        return false;
    }
    println!("valgrind missing: apt-get install -y valgrind");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "valgrind"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    let ok = have_valgrind();
    if !ok {
        println!("note: could not install valgrind; skipping instruction counts");
    }
    ok
}

/// (op, contender, instructions per poll) from one callgrind run of this binary.
fn callgrind(p: &Params) -> Vec<(&'static str, Contender, f64)> {
    if !ensure_valgrind() {
        return Vec::new();
    }
    let dir = std::env::temp_dir().join(format!("tcp-hygiene-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_file = dir.join("cg.out");
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*read_polls*",
            "--toggle-collect=*write_polls*",
            "--dump-after=loopback::read_polls*",
            "--dump-after=loopback::write_polls*",
        ])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .env(ROLE_ENV, ROLE_CALLGRIND)
        .env("POLLS", p.callgrind_polls.to_string())
        .output()
        .expect("run valgrind");
    if !output.status.success() {
        println!(
            "note: callgrind run failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return Vec::new();
    }
    let results = parse_callgrind(&String::from_utf8_lossy(&output.stdout), &out_file);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

fn parse_callgrind(child_stdout: &str, out_file: &Path) -> Vec<(&'static str, Contender, f64)> {
    // [op][contender] → (instructions, polls)
    let mut sums = [[(0.0, 0.0); 3]; 2];
    for line in child_stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ["cg", seq, op, name, polls, ok, round] = f[..] else {
            continue;
        };
        if round != "1" || ok != "1" {
            continue;
        }
        let dump = PathBuf::from(format!("{}.{seq}", out_file.display()));
        let Some(ir) = callgrind_total(&dump) else {
            println!("note: no callgrind dump {}", dump.display());
            continue;
        };
        let Some(c) = Contender::ALL.into_iter().find(|c| c.name() == name) else {
            continue;
        };
        let o = usize::from(op == "write");
        sums[o][c.index()].0 += ir;
        sums[o][c.index()].1 += polls.parse::<f64>().unwrap_or(f64::NAN);
    }
    let mut out = Vec::new();
    for (o, op) in ["read", "write"].into_iter().enumerate() {
        for c in Contender::ALL {
            let (ir, polls) = sums[o][c.index()];
            if polls > 0.0 {
                out.push((op, c, ir / polls));
            }
        }
    }
    out
}

/// The event total of one callgrind dump (`totals:` or `summary:` line).
fn callgrind_total(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------
// Small statistics.

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// A distribution-free 95 % confidence interval of the median of sorted values (order
/// statistics, normal approximation of the binomial).
fn median_ci(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len() as f64;
    let half = 0.98 * n.sqrt();
    let lo = ((n / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n / 2.0 + half).ceil() as usize).min(sorted.len().saturating_sub(1));
    match sorted.get(lo).zip(sorted.get(hi)) {
        Some((&a, &b)) => (a, b),
        None => (f64::NAN, f64::NAN),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
