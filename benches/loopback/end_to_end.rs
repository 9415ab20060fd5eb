//! End to end, through a real runtime: throughput, ping-pong round trips and accept
//! bursts, every contender in every round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::common::stats::{percentile, sorted};
use crate::contenders::{with_server, Contender, Server};
use crate::report::{rows, Row};
use crate::{Params, SMALL};

/// The server's writes in `throughput`.
const CHUNK: usize = 64 * 1024;

pub(crate) fn run(rt: &Runtime, suffix: &str, p: &Params) -> Vec<Row> {
    let mut out = Vec::new();

    let mut values = Vec::new();
    for round in 0..p.rounds * usize::from(p.runs("throughput")) {
        let mut r = [0.0; Contender::SLOTS];
        for c in Contender::order(round, Contender::ALL) {
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
            let (mut a, mut b) = ([0.0; Contender::SLOTS], [0.0; Contender::SLOTS]);
            for c in Contender::order(round, Contender::ALL) {
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
        let mut r = [0.0; Contender::SLOTS];
        for c in Contender::order(round, Contender::ALL) {
            r[c.index()] = rt.block_on(async {
                with_server!(c, accept_rate(p.accept_burst, p.accept_concurrency))
            });
        }
        values.push(r);
    }
    out.extend(rows(&format!("accept_{suffix}"), "k/s", true, &values));
    out.extend(crate::clients::run(rt, suffix, p));
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
    let rtts = client.await.expect("client");
    echo.await.expect("echo");
    if let Some(sleeper) = sleeper {
        sleeper.abort();
    }
    let rtts = sorted(rtts);
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
