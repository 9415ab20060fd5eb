//! HTTP requests per second through axum (with `--features axum`): the library's serve
//! against axum's own server over tokio's listener, in the same rounds.
//!
//! Contenders (the same `Router`, `GET /` answering `ok`):
//! - `raw`: `axum::serve` over `tokio::net::TcpListener`, no library at all;
//! - `hygiene-listener`: `axum::serve` over the library's `TcpListener` (its
//!   `axum::serve::Listener` impl): supervised sockets, axum's own connection handling;
//! - `hygiene-serve`: `tcp_hygiene::integration::axum::serve`, which also owns every
//!   connection's task, keeps a header read timeout and a keep-alive timeout, and tracks
//!   each request (the `RequestBody` and `ConnectionHandle` per request).
//!
//! Both library contenders run with an idle timeout, a read-idle timeout and the default
//! `CLOSE_WAIT`, FIN-wait, keepalive and user timeouts on. The load: 16 keep-alive
//! connections from hyper's client in the same runtime (2 workers), each sending its
//! requests one after another, over HTTP/1.1 and then over HTTP/2 with prior knowledge
//! (h2c, which both servers detect per connection). Each round's requests per second is
//! divided by raw's of the same round; the median of those ratios is reported as
//! `ratio http_rps <contender> <median>` (and `http2_rps`). The target: ≥ 1.00.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Runtime;

use crate::common::stats::{median, spread};

const CONNECTIONS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Raw,
    HygieneListener,
    HygieneServe,
}

impl Contender {
    const ALL: [Contender; 3] = [
        Contender::Raw,
        Contender::HygieneListener,
        Contender::HygieneServe,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw",
            Contender::HygieneListener => "hygiene-listener",
            Contender::HygieneServe => "hygiene-serve",
        }
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

fn builder() -> tcp_hygiene::Builder {
    let mut b = tcp_hygiene::Builder::new();
    b.idle_timeout(Duration::from_secs(300))
        .read_idle_timeout(Duration::from_secs(300));
    b
}

/// Starts the contender's server on 127.0.0.1; its address and the task serving it.
async fn start(c: Contender) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let tokio = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tokio.local_addr().expect("local_addr");
    let task = match c {
        Contender::Raw => tokio::spawn(async move {
            axum::serve(tokio, app()).await.expect("axum::serve");
        }),
        Contender::HygieneListener => {
            let listener = builder().wrap(tokio).expect("wrap");
            tokio::spawn(async move {
                axum::serve(listener, app()).await.expect("axum::serve");
            })
        }
        Contender::HygieneServe => {
            let listener = builder().wrap(tokio).expect("wrap");
            tokio::spawn(async move {
                tcp_hygiene::integration::axum::serve(listener, app())
                    .await
                    .expect("serve");
            })
        }
    };
    (addr, task)
}

/// A keep-alive client connection: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn connect(addr: SocketAddr, h2: bool) -> (Self, tokio::task::JoinHandle<()>) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H2(sender), driver)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H1(sender), driver)
        }
    }

    /// One `GET /`, its body checked.
    async fn get(&mut self) {
        let request = hyper::Request::get("http://bench/")
            .body(Empty::new())
            .expect("request");
        let response = match self {
            Sender::H1(sender) => {
                sender.ready().await.expect("ready");
                sender.send_request(request).await
            }
            Sender::H2(sender) => sender.send_request(request).await,
        };
        let response = response.expect("response");
        assert!(response.status().is_success());
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes().as_ref(), b"ok");
    }
}

/// `CONNECTIONS` keep-alive clients (`h2`: HTTP/2), `requests` each, one after another;
/// requests per second over all of them.
async fn load(addr: SocketAddr, h2: bool, requests: usize) -> f64 {
    let start = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let (mut sender, driver) = Sender::connect(addr, h2).await;
                for _ in 0..requests {
                    sender.get().await;
                }
                drop(sender);
                let _ = driver.await;
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    (CONNECTIONS * requests) as f64 / start.elapsed().as_secs_f64()
}

fn one(rt: &Runtime, c: Contender, h2: bool, requests: usize) -> f64 {
    rt.block_on(async {
        let (addr, server) = start(c).await;
        // A first request per connection outside the timing: connection set-up is the
        // accept figure of the loopback bench, not this one's.
        load(addr, h2, 1).await;
        let rps = load(addr, h2, requests).await;
        server.abort();
        let _ = server.await;
        rps
    })
}

/// Runs `rounds` rounds of `requests` requests per connection, HTTP/1.1 then HTTP/2
/// (h2c); the lines to print.
pub(crate) fn run(rounds: usize, requests: usize) -> Vec<String> {
    let mut out = vec![format!(
        "http: {rounds} rounds of {CONNECTIONS} keep-alive connections × {requests} requests of GET /, HTTP/1.1 and HTTP/2 (h2c), contenders interleaved"
    )];
    let rt = crate::common::multi_thread_runtime();
    out.push(format!(
        "{:<8} {:<17} {:>10} {:>7} {:>15}",
        "protocol", "contender", "req/s", "ratio", "ratio spread"
    ));
    let mut targets = Vec::new();
    for (h2, metric) in [(false, "http_rps"), (true, "http2_rps")] {
        let mut values = Vec::new();
        for round in 0..rounds {
            let mut order = Contender::ALL;
            order.rotate_left(round % Contender::ALL.len());
            let mut r = [0.0; 3];
            for c in order {
                r[c as usize] = one(&rt, c, h2, requests);
            }
            values.push(r);
        }
        for c in Contender::ALL {
            let mine: Vec<f64> = values.iter().map(|r| r[c as usize]).collect();
            let ratio: Vec<f64> = values
                .iter()
                .map(|r| r[c as usize] / r[Contender::Raw as usize])
                .collect();
            let (lo, hi) = spread(&ratio);
            out.push(format!(
                "{:<8} {:<17} {:>10.0} {:>7.3} {:>15}",
                if h2 { "h2c" } else { "h1" },
                c.name(),
                median(&mine),
                median(&ratio),
                format!("{lo:.3}..{hi:.3}")
            ));
            if c != Contender::Raw {
                targets.push((metric, c, median(&ratio)));
            }
        }
    }
    for (metric, c, ratio) in &targets {
        out.push(format!("ratio {metric} {} {ratio:.3}", c.name()));
    }
    for (metric, c, ratio) in &targets {
        let verdict = if *ratio >= 1.0 { "met" } else { "MISSED" };
        out.push(format!(
            "target {metric} {} ≥ 1.00: {verdict} ({ratio:.3})",
            c.name()
        ));
    }
    out
}
