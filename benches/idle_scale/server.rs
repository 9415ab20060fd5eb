//! A server process: accepts and holds `N` connections of one contender without polling
//! them, measures their memory and the idle CPU (or, as `PHASE=looks`, the cost of the
//! looks that idle timeouts take), then (for `hygiene`) FIN detection and reaping.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use crate::alloc::{size_breakdown, size_classes, LIVE_ALLOCS, LIVE_BYTES};
use crate::common::host::raise_nofile_for;
use crate::common::net::{listener_with_backlog, set_like_hygiene};
use crate::lines::{expect_line, metric, tell};
use crate::probes::{
    context_switches, cpu_time, epoll_registration_bytes, epoll_registrations, rss_bytes,
};
use crate::{common, env_usize, fin, looks, BURST, CLOSE_WAIT_TIMEOUT};

/// The contender's listener.
enum Listener {
    Raw(tokio::net::TcpListener),
    Hygiene(tcp_hygiene::TcpListener),
}

/// The streams a server holds and never polls.
enum Held {
    Raw(Vec<TcpStream>),
    Hygiene(Vec<tcp_hygiene::TcpStream>),
}

impl Listener {
    /// `hygiene` runs with the defaults but for a 1 s `close_wait_timeout` (for the reap
    /// phase); `hygiene_timeouts` also with `idle_timeout`, `read_idle_timeout` and
    /// `write_idle_timeout` at `timeouts`.
    fn new(contender: &str, socket: std::net::TcpListener, timeouts: Duration) -> Self {
        let listener = tokio::net::TcpListener::from_std(socket).expect("register");
        let mut builder = tcp_hygiene::Builder::new();
        builder.close_wait_timeout(CLOSE_WAIT_TIMEOUT);
        match contender {
            "raw" => return Listener::Raw(listener),
            "hygiene" => {}
            "hygiene_timeouts" => {
                builder
                    .idle_timeout(timeouts)
                    .read_idle_timeout(timeouts)
                    .write_idle_timeout(timeouts);
            }
            other => panic!("unknown contender {other}"),
        }
        Listener::Hygiene(builder.wrap(listener).expect("wrap"))
    }

    /// Accepts `n` connections: their streams, and their peers' addresses.
    async fn accept_all(&self, n: usize) -> (Held, Vec<SocketAddr>) {
        let mut ports = Vec::with_capacity(n);
        let held = match self {
            Listener::Hygiene(listener) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let (stream, peer) = listener.accept().await.expect("accept");
                    ports.push(peer);
                    v.push(stream);
                }
                Held::Hygiene(v)
            }
            Listener::Raw(listener) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let (stream, peer) = listener.accept().await.expect("accept");
                    set_default_options(&stream);
                    ports.push(peer);
                    v.push(stream);
                }
                Held::Raw(v)
            }
        };
        (held, ports)
    }
}

pub(crate) fn main() {
    let _ = raise_nofile_for(env_usize("N", 5000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(server());
}

/// What the library sets by default, set by hand on raw sockets.
fn set_default_options(stream: &TcpStream) {
    set_like_hygiene(
        SockRef::from(stream),
        tcp_hygiene::Keepalive::DEFAULT,
        tcp_hygiene::Builder::DEFAULT_USER_TIMEOUT,
    );
}

async fn server() {
    let contender = std::env::var("CONTENDER").expect("CONTENDER");
    let phase = std::env::var("PHASE").unwrap_or_default();
    let n = env_usize("N", 5000);
    let idle = Duration::from_secs(env_usize("IDLE_SECS", 10) as u64);
    let timeouts = Duration::from_secs(env_usize("TIMEOUT_SECS", 60) as u64);

    // The socket and the client process first: neither is the contender's.
    let socket = listener_with_backlog(4096);
    socket.set_nonblocking(true).expect("nonblocking");
    let port = socket.local_addr().expect("addr").port();
    let mut client = tokio::process::Command::from(common::self_command("client"))
        .env("PORT", port.to_string())
        .env("N", n.to_string())
        .env("RUN", env_usize("RUN", 0).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn client");
    let mut to_client = client.stdin.take().expect("stdin");
    let mut from_client = BufReader::new(client.stdout.take().expect("stdout")).lines();

    // Give the runtime's threads their steady-state memory, then take the baseline
    // before the listener exists: whatever the library allocates when it is built (the
    // supervisor, its tables) counts, spread over the connections it holds.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = Baseline::take();
    let listener = Listener::new(&contender, socket, timeouts);
    tell(&mut to_client, "connect").await;

    let start = Instant::now();
    let (held, ports) = listener.accept_all(n).await;
    let accepted = start..Instant::now();
    let holding = match &held {
        Held::Raw(v) => v.len(),
        Held::Hygiene(v) => v.len(),
    };
    assert_eq!(holding, n);
    expect_line(&mut from_client, "connected").await;
    let accept_s = (accepted.end - accepted.start).as_secs_f64();
    println!("accepted {n} in {accept_s:.2} s; the client has them all");
    // The holds' accept times set the later phases' timeouts (`slowest_accept`).
    let key = if phase == "looks" {
        "looks_accept_s"
    } else {
        "accept_s"
    };
    metric(key, accept_s);
    // Let the supervisor take in every registration.
    tokio::time::sleep(Duration::from_secs(1)).await;

    match (&listener, phase.as_str()) {
        (Listener::Hygiene(listener), "looks") => {
            looks::measure(
                listener,
                timeouts,
                accepted,
                n,
                &mut to_client,
                &mut from_client,
            )
            .await;
        }
        _ => {
            // The address list is bookkeeping of the benchmark, not of the contender.
            let bookkeeping = ports.capacity() * std::mem::size_of::<SocketAddr>();
            baseline.report(&held, n, bookkeeping as isize);
            // The supervisor rounds a deadline up to its grid, never down: no look comes
            // before one timeout after the first accept.
            let first_deadline =
                (contender == "hygiene_timeouts").then(|| accepted.start + timeouts);
            idle_window(idle, first_deadline).await;
        }
    }
    if let (Held::Hygiene(streams), "hygiene") = (&held, contender.as_str()) {
        let sequential = env_usize("SEQUENTIAL", 200);
        let burst = env_usize("BURST", BURST);
        fin::measure(
            streams,
            &ports,
            sequential,
            burst,
            &mut to_client,
            &mut from_client,
        )
        .await;
    }

    tell(&mut to_client, "exit").await;
    drop(held);
    drop(listener);
    let status = client.wait().await.expect("client");
    assert!(status.success(), "client failed: {status}");
}

/// The process's memory before the listener is built.
struct Baseline {
    sizes: Vec<isize>,
    bytes: isize,
    allocs: isize,
    rss: u64,
    epoll: usize,
}

impl Baseline {
    fn take() -> Self {
        Self {
            sizes: size_classes(),
            bytes: LIVE_BYTES.load(Relaxed),
            allocs: LIVE_ALLOCS.load(Relaxed),
            rss: rss_bytes(),
            epoll: epoll_registrations(),
        }
    }

    /// What holding the `n` connections costs, per connection; `bookkeeping` bytes in one
    /// allocation are the benchmark's own.
    fn report(&self, held: &Held, n: usize, bookkeeping: isize) {
        let bytes = LIVE_BYTES.load(Relaxed) - self.bytes - bookkeeping;
        let allocs = LIVE_ALLOCS.load(Relaxed) - self.allocs - 1;
        metric("mem_per_conn_bytes", bytes as f64 / n as f64);
        metric("allocs_per_conn", allocs as f64 / n as f64);
        println!(
            "heap per connection: {:.0} B in {:.2} allocations: {}",
            bytes as f64 / n as f64,
            allocs as f64 / n as f64,
            size_breakdown(&self.sizes, &size_classes(), n)
        );
        metric(
            "rss_per_conn_bytes",
            (rss_bytes() as f64 - self.rss as f64 - bookkeeping as f64) / n as f64,
        );
        metric(
            "stream_size_bytes",
            match held {
                Held::Raw(_) => std::mem::size_of::<TcpStream>(),
                Held::Hygiene(_) => std::mem::size_of::<tcp_hygiene::TcpStream>(),
            } as f64,
        );
        let registrations = (epoll_registrations() as f64 - self.epoll as f64) / n as f64;
        metric("kernel_epoll_regs_per_conn", registrations);
        metric(
            "kernel_epoll_bytes_per_conn",
            registrations * epoll_registration_bytes() as f64,
        );
    }
}

/// CPU time and wake-ups over `idle` while the connections are held and silent, if the
/// window closed before the first deadline of the contender's timeouts (else the figures
/// would count looks, and are not reported).
async fn idle_window(idle: Duration, first_deadline: Option<Instant>) {
    let (cpu0, ctx0, t0) = (cpu_time(), context_switches(), Instant::now());
    tokio::time::sleep(idle).await;
    let (cpu, ctx, window) = (cpu_time() - cpu0, context_switches() - ctx0, t0.elapsed());
    if first_deadline.is_some_and(|deadline| Instant::now() > deadline) {
        println!("idle window: TOO LATE, it reached the first deadline (idle CPU not reported)");
        return;
    }
    metric("idle_cpu_ms", cpu.as_secs_f64() * 1e3);
    metric(
        "idle_cpu_pct",
        cpu.as_secs_f64() / window.as_secs_f64() * 100.0,
    );
    metric("idle_wakeups", ctx as f64);
}
