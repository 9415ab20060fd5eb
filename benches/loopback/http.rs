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
use tokio::runtime::Runtime;

use crate::http_rounds::{header, interleaved, rows, verdicts, Sender};

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

/// `CONNECTIONS` keep-alive clients (`h2`: HTTP/2), `requests` each, one after another;
/// requests per second over all of them.
async fn load(addr: SocketAddr, h2: bool, requests: usize) -> f64 {
    let start = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, driver) = Sender::handshake(stream, h2).await;
                for _ in 0..requests {
                    sender.get("http://bench/").await;
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
    let mut out = vec![
        format!(
            "http: {rounds} rounds of {CONNECTIONS} keep-alive connections × {requests} requests of GET /, HTTP/1.1 and HTTP/2 (h2c), contenders interleaved"
        ),
        header(),
    ];
    let rt = crate::common::multi_thread_runtime();
    let names = Contender::ALL.map(Contender::name);
    let mut ratios = Vec::new();
    for (h2, protocol, metric) in [(false, "h1", "http_rps"), (true, "h2c", "http2_rps")] {
        let values = interleaved(rounds, &Contender::ALL, |c| one(&rt, c, h2, requests));
        let (lines, medians) = rows(protocol, &names, &values);
        out.extend(lines);
        ratios.extend(medians.into_iter().map(|(n, r)| (metric.to_owned(), n, r)));
    }
    out.extend(verdicts(&ratios, 1.0));
    out
}
