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
//!   says how many chunks), `rss_per_conn_bytes` as a cross-check, and for `hygiene` the
//!   kernel-side `eventpoll_epi` objects of the FIN watcher (`/proc/slabinfo`, root only).
//! - `idle_cpu_pct`: process CPU time (`getrusage`) over the idle window, in percent of one
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
#![allow(unsafe_code)] // a counting allocator, getrusage, setrlimit, clock_gettime.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ROLE_ENV: &str = "TCP_HYGIENE_BENCH_ROLE";
const CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
const BURST: usize = 1000;

// ---------------------------------------------------------------------------------------
// A counting allocator: live bytes and live allocations.

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);
/// Live allocations by requested size, in 8-byte classes up to 4 KiB; the last class
/// holds the bytes (not the count) of everything larger.
static BY_SIZE: [AtomicIsize; SIZE_CLASSES + 1] = [const { AtomicIsize::new(0) }; SIZE_CLASSES + 1];
const SIZE_CLASSES: usize = 512;

fn track(size: usize, sign: isize) {
    LIVE_BYTES.fetch_add(sign * size as isize, Relaxed);
    LIVE_ALLOCS.fetch_add(sign, Relaxed);
    match size.div_ceil(8) {
        class @ 0..SIZE_CLASSES => BY_SIZE[class].fetch_add(sign, Relaxed),
        _ => BY_SIZE[SIZE_CLASSES].fetch_add(sign * size as isize, Relaxed),
    };
}

fn size_classes() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Relaxed)).collect()
}

/// The size classes that grew the most between two `size_classes()` snapshots, by bytes.
fn size_breakdown(before: &[isize], after: &[isize], n: usize) -> String {
    let mut grown: Vec<(isize, String)> = (0..SIZE_CLASSES)
        .filter_map(|c| {
            let d = after[c] - before[c];
            let bytes = d * (c as isize * 8);
            (bytes.unsigned_abs() >= n).then(|| {
                (
                    bytes,
                    format!("{:.2}×{}..{} B", d as f64 / n as f64, c * 8 - 7, c * 8),
                )
            })
        })
        .collect();
    let large = after[SIZE_CLASSES] - before[SIZE_CLASSES];
    if large.unsigned_abs() >= n {
        grown.push((
            large,
            format!("{:.0} B in >4 KiB blocks", large as f64 / n as f64),
        ));
    }
    grown.sort_by_key(|(bytes, _)| -bytes);
    grown
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(", ")
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        track(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(layout.size(), -1);
            track(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Small system helpers.

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the host.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft descriptor limit to the hard one.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Context switches of every thread of this process so far (a wakeup costs at least one).
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Descriptors registered in all of this process's epoll instances (the `tfd:` lines of
/// their fdinfo): tokio's reactor and, for `hygiene`, the FIN watcher.
fn epoll_registrations() -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]")
        })
        .filter_map(|fd| {
            let info = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
            let info = std::fs::read_to_string(info).ok()?;
            Some(
                info.lines()
                    .filter(|l| l.starts_with("tfd:"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })
        // mio keeps a duplicate of its epoll descriptor: count each instance once.
        .collect::<std::collections::HashSet<String>>()
        .iter()
        .map(|regs| regs.lines().count())
        .sum()
}

/// Kernel bytes per epoll registration: one `epitem` and one `eppoll_entry`, from their
/// slab caches' object sizes (128 + 64 on x86-64 when `/sys/kernel/slab` is not readable).
fn epoll_registration_bytes() -> u64 {
    let size = |cache: &str, default: u64| {
        std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/slab_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default)
    };
    size("eventpoll_epi", 128) + size("eventpoll_pwq", 64)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Orchestrator.

#[derive(Debug, Clone, Copy)]
struct Plan {
    n: usize,
    idle_secs: u64,
    /// Connections half-closed one at a time, and at once.
    sequential: usize,
    burst: usize,
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => return server_main(),
        Ok("client") => return client_main(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = !args.iter().any(|a| a == "--bench");
    let n_arg = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let mut plan = match (smoke, quick) {
        (true, _) => Plan {
            n: 300,
            idle_secs: 1,
            sequential: 20,
            burst: 100,
        },
        (false, true) => Plan {
            n: 5000,
            idle_secs: 10,
            sequential: 200,
            burst: BURST,
        },
        (false, false) => Plan {
            n: 15_000,
            idle_secs: 10,
            sequential: 500,
            burst: BURST,
        },
    };
    if let Some(n) = n_arg {
        plan.n = n;
    }
    plan.sequential = plan.sequential.min(plan.n / 4);
    plan.burst = plan.burst.min(plan.n / 2);
    println!(
        "idle_scale ({}): {} idle connections per server, idle window {} s, FINs: {} one at a time then {} at once; load average {}",
        if smoke { "smoke test: run with `cargo bench` for numbers" } else if quick { "--quick" } else { "full" },
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
            "target user-space memory ≤ 64 B per connection over raw: {} ({d:.0} B; kernel: {:.0} B more in epoll)",
            verdict(d <= 64.0),
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
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(ROLE_ENV, "server")
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

// ---------------------------------------------------------------------------------------
// Server.

/// The streams a server holds and never polls.
enum Held {
    Raw(Vec<TcpStream>),
    Hygiene(Vec<tcp_hygiene::TcpStream>),
}

fn server_main() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(server());
}

fn metric(key: &str, value: f64) {
    println!("m {key} {value}");
}

/// What the library sets by default, set by hand on raw sockets.
fn set_default_options(stream: &TcpStream) {
    let ka = tcp_hygiene::Keepalive::DEFAULT;
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(ka.idle())
        .with_interval(ka.interval())
        .with_retries(ka.retries());
    sock.set_tcp_keepalive(&keepalive).expect("keepalive");
    sock.set_tcp_user_timeout(Some(tcp_hygiene::Builder::DEFAULT_USER_TIMEOUT))
        .expect("user timeout");
}

fn big_backlog_listener() -> tokio::net::TcpListener {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("reuseaddr");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(4096).expect("listen");
    socket.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(socket.into()).expect("register")
}

async fn server() {
    let contender = std::env::var("CONTENDER").expect("CONTENDER");
    let n = env_usize("N", 5000);
    let idle = Duration::from_secs(env_usize("IDLE_SECS", 10) as u64);
    let wrapped = contender == "hygiene";

    let tokio_listener = big_backlog_listener();
    let port = tokio_listener.local_addr().expect("addr").port();
    let hygiene_listener = wrapped.then(|| {
        tcp_hygiene::Builder::new()
            .close_wait_timeout(CLOSE_WAIT_TIMEOUT)
            .wrap(big_backlog_listener())
            .expect("wrap")
    });
    let port = hygiene_listener
        .as_ref()
        .map_or(port, |l| l.local_addr().expect("addr").port());

    let mut client = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_ENV, "client")
        .env("PORT", port.to_string())
        .env("N", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn client");
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout")).lines();

    // Give the runtime's threads and the supervisor their steady-state memory first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sizes0 = size_classes();
    let (bytes0, allocs0, rss0, epoll0) = (
        LIVE_BYTES.load(Relaxed),
        LIVE_ALLOCS.load(Relaxed),
        rss_bytes(),
        epoll_registrations(),
    );

    let start = Instant::now();
    let mut ports = Vec::with_capacity(n);
    let mut held = match &hygiene_listener {
        Some(listener) => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let (stream, peer) = listener.accept().await.expect("accept");
                ports.push(peer.port());
                v.push(stream);
            }
            Held::Hygiene(v)
        }
        None => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let (stream, peer) = tokio_listener.accept().await.expect("accept");
                set_default_options(&stream);
                ports.push(peer.port());
                v.push(stream);
            }
            Held::Raw(v)
        }
    };
    let accepted_in = start.elapsed();
    let holding = match &held {
        Held::Raw(v) => v.len(),
        Held::Hygiene(v) => v.len(),
    };
    assert_eq!(holding, n);
    expect_line(&mut from_client, "connected").await;
    println!(
        "accepted {n} in {:.2} s; the client has them all",
        accepted_in.as_secs_f64()
    );
    // Let the supervisor take in every registration.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The port list is bookkeeping of the benchmark, not of the contender.
    let ports_bytes = (ports.capacity() * std::mem::size_of::<u16>()) as isize;
    let bytes = LIVE_BYTES.load(Relaxed) - bytes0 - ports_bytes;
    let allocs = LIVE_ALLOCS.load(Relaxed) - allocs0 - 1;
    metric("mem_per_conn_bytes", bytes as f64 / n as f64);
    metric("allocs_per_conn", allocs as f64 / n as f64);
    println!(
        "heap per connection: {:.0} B in {:.2} allocations: {}",
        bytes as f64 / n as f64,
        allocs as f64 / n as f64,
        size_breakdown(&sizes0, &size_classes(), n)
    );
    metric(
        "rss_per_conn_bytes",
        (rss_bytes() as f64 - rss0 as f64 - ports_bytes as f64) / n as f64,
    );
    metric(
        "stream_size_bytes",
        match &held {
            Held::Raw(_) => std::mem::size_of::<TcpStream>(),
            Held::Hygiene(_) => std::mem::size_of::<tcp_hygiene::TcpStream>(),
        } as f64,
    );
    let registrations = (epoll_registrations() as f64 - epoll0 as f64) / n as f64;
    metric("kernel_epoll_regs_per_conn", registrations);
    metric(
        "kernel_epoll_bytes_per_conn",
        registrations * epoll_registration_bytes() as f64,
    );

    let (cpu0, ctx0, t0) = (cpu_time(), context_switches(), Instant::now());
    tokio::time::sleep(idle).await;
    let (cpu, ctx, window) = (cpu_time() - cpu0, context_switches() - ctx0, t0.elapsed());
    metric("idle_cpu_ms", cpu.as_secs_f64() * 1e3);
    metric(
        "idle_cpu_pct",
        cpu.as_secs_f64() / window.as_secs_f64() * 100.0,
    );
    metric("idle_wakeups", ctx as f64);

    if let Held::Hygiene(streams) = &mut held {
        let sequential = env_usize("SEQUENTIAL", 200);
        let burst = env_usize("BURST", BURST);
        let mut reap_late = Vec::new();
        let mut early = 0;
        for (phase, range, gap_us) in [
            ("seq", 0..sequential, 3000),
            ("burst", sequential..sequential + burst, 0),
        ] {
            let r = fin_phase(
                &streams[range.clone()],
                &ports[range],
                gap_us,
                &mut to_client,
                &mut from_client,
            )
            .await;
            let latencies = sorted(r.detect.clone());
            let detected = latencies.len();
            match phase {
                "seq" => {
                    metric("fin_detect_p50_us", percentile(&latencies, 0.5) / 1e3);
                    metric("fin_detect_p99_us", percentile(&latencies, 0.99) / 1e3);
                    metric("fin_detect_max_us", percentile(&latencies, 1.0) / 1e3);
                }
                _ => {
                    metric("fin_burst_p50_ms", percentile(&latencies, 0.5) / 1e6);
                    metric("fin_burst_p99_ms", percentile(&latencies, 0.99) / 1e6);
                    metric("fin_burst_max_ms", percentile(&latencies, 1.0) / 1e6);
                    metric("fin_burst_detected", detected as f64);
                    metric("fin_burst_sent", r.sent as f64);
                }
            }
            println!(
                "{phase}: {} FINs sent, {detected} detected, {} EOFs (reaped) seen by the client",
                r.sent, r.reaped
            );
            let late = sorted(r.reap_late.clone());
            metric(
                &format!("reap_late_{phase}_p50_ms"),
                percentile(&late, 0.5) / 1e6,
            );
            metric(
                &format!("reap_late_{phase}_p99_ms"),
                percentile(&late, 0.99) / 1e6,
            );
            metric(
                &format!("reap_late_{phase}_min_ms"),
                percentile(&late, 0.0) / 1e6,
            );
            reap_late.extend(r.reap_late);
            early += r.early;
        }
        let late = sorted(reap_late);
        metric("reap_late_p50_ms", percentile(&late, 0.5) / 1e6);
        metric("reap_late_p99_ms", percentile(&late, 0.99) / 1e6);
        metric("reap_late_max_ms", percentile(&late, 1.0) / 1e6);
        metric("reap_late_min_ms", percentile(&late, 0.0) / 1e6);
        metric("reap_measured", late.len() as f64);
        metric("reap_early", early as f64);
    }

    to_client.write_all(b"exit\n").await.expect("to client");
    to_client.flush().await.expect("flush");
    drop(held);
    let status = client.wait().await.expect("client");
    assert!(status.success(), "client failed: {status}");
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn expect_line(lines: &mut Lines, want: &str) {
    loop {
        match lines.next_line().await.expect("client output") {
            Some(line) if line == want => return,
            Some(line) => println!("client: {line}"),
            None => panic!("client exited before `{want}`"),
        }
    }
}

struct FinResults {
    sent: usize,
    /// ns from the client's shutdown to `peer_closed()`.
    detect: Vec<f64>,
    reaped: usize,
    /// ns from detection + close_wait_timeout to the client's EOF.
    reap_late: Vec<f64>,
    early: usize,
}

/// Half-closes `streams` from the client side (`gap_us` apart, 0 = all at once) while
/// their handlers do not poll; times detection and reaping.
async fn fin_phase(
    streams: &[tcp_hygiene::TcpStream],
    ports: &[u16],
    gap_us: u64,
    to_client: &mut tokio::process::ChildStdin,
    from_client: &mut Lines,
) -> FinResults {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (stream, &port) in streams.iter().zip(ports) {
        let closed = stream.peer_closed();
        let tx = tx.clone();
        tokio::spawn(async move {
            closed.await;
            let _ = tx.send((port, mono_ns()));
        });
    }
    drop(tx);
    // Every waiter must be parked before the first FIN, or its stamp would be late.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let command = format!("close {gap_us} {}\n", list.join(" "));
    to_client
        .write_all(command.as_bytes())
        .await
        .expect("to client");
    to_client.flush().await.expect("flush");

    let mut shut: HashMap<u16, u64> = HashMap::new();
    let mut eof: HashMap<u16, u64> = HashMap::new();
    loop {
        let line = from_client
            .next_line()
            .await
            .expect("client")
            .expect("client exited");
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["fin", port, t] => {
                shut.insert(port.parse().expect("port"), t.parse().expect("t"));
            }
            ["eof", port, t] => {
                eof.insert(port.parse().expect("port"), t.parse().expect("t"));
            }
            ["done"] => break,
            _ => println!("client: {line}"),
        }
    }
    let mut detected: HashMap<u16, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while detected.len() < streams.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((port, t))) => {
                detected.insert(port, t);
            }
            _ => break,
        }
    }
    let timeout_ns = CLOSE_WAIT_TIMEOUT.as_nanos() as u64;
    let mut r = FinResults {
        sent: shut.len(),
        detect: Vec::new(),
        reaped: eof.len(),
        reap_late: Vec::new(),
        early: 0,
    };
    for (port, &t_shut) in &shut {
        let Some(&t_detect) = detected.get(port) else {
            continue;
        };
        r.detect.push(t_detect.saturating_sub(t_shut) as f64);
        if let Some(&t_eof) = eof.get(port) {
            r.reap_late
                .push(t_eof as f64 - (t_detect + timeout_ns) as f64);
            if t_eof < t_shut + timeout_ns {
                r.early += 1;
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// Client.

fn client_main() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(client());
}

async fn client() {
    let port: u16 = env_usize("PORT", 0) as u16;
    let n = env_usize("N", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut conns: HashMap<u16, Arc<TcpStream>> = HashMap::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while conns.len() < n {
        while started < n && pending.len() < 64 {
            pending.spawn(TcpStream::connect(addr));
            started += 1;
        }
        let stream = pending
            .join_next()
            .await
            .expect("connects pending")
            .expect("join")
            .expect("connect");
        let local = stream.local_addr().expect("local").port();
        conns.insert(local, Arc::new(stream));
    }
    println!("connected");

    let stdin = BufReader::new(tokio::io::stdin());
    let mut lines = stdin.lines();
    while let Some(line) = lines.next_line().await.expect("stdin") {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("close") => {
                let gap = Duration::from_micros(f[1].parse().expect("gap"));
                let ports: Vec<u16> = f[2..].iter().map(|p| p.parse().expect("port")).collect();
                close(&conns, &ports, gap).await;
            }
            Some("exit") | None => break,
            Some(other) => println!("unknown command {other}"),
        }
    }
}

/// Shuts down the write half of each of `ports` (`gap` apart) and stamps the EOF that
/// comes back when the server closes its side.
async fn close(conns: &HashMap<u16, Arc<TcpStream>>, ports: &[u16], gap: Duration) {
    let mut readers = tokio::task::JoinSet::new();
    for &port in ports {
        let stream = conns[&port].clone();
        readers.spawn(async move {
            let mut buf = [0_u8; 64];
            loop {
                if stream.readable().await.is_err() {
                    return (port, None);
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return (port, Some(mono_ns())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return (port, None),
                }
            }
        });
    }
    // Let every reader park first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut stamps = Vec::with_capacity(ports.len());
    for &port in ports {
        let t = mono_ns();
        SockRef::from(&*conns[&port])
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        stamps.push((port, t));
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let mut out = io::stdout().lock();
    for (port, t) in stamps {
        writeln!(out, "fin {port} {t}").expect("stdout");
    }
    drop(out);
    // close_wait_timeout plus generous slack for a loaded machine.
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT_TIMEOUT + Duration::from_secs(4);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, readers.join_next()).await {
        if let Ok((port, Some(t))) = joined {
            println!("eof {port} {t}");
        }
    }
    readers.abort_all();
    println!("done");
}
