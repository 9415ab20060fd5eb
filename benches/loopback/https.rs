//! HTTPS requests per second through axum (with `--features axum,tls`): the library's
//! serve with [`Serve::tls`](tcp_hygiene::integration::http::Serve::tls) against the
//! usual hand-written server, tokio's listener with a tokio-rustls handshake in each
//! connection's task and hyper-util's auto builder, in the same rounds.
//!
//! Both serve the same `Router` (`GET /` answering `ok`) with the same rustls config (a
//! self-signed ECDSA P-256 certificate, ring, ALPN `h2` and `http/1.1`). The load: 16
//! keep-alive connections from hyper's client in the same runtime (2 workers), each
//! sending its requests one after another, over HTTP/1.1 and over HTTP/2 (chosen by
//! ALPN); the handshakes are made before the timing. The library's listener runs with an
//! idle timeout, a read-idle timeout and its default timeouts on. Each round's requests
//! per second is divided by the control's of the same round; the median of those ratios
//! is reported as `ratio https_rps_h1 hygiene-serve <median>` (and `https_rps_h2`). The
//! target: ≥ 0.97.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tcp_hygiene::integration::rustls;
use tokio::runtime::Runtime;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::certs::{certs, Certs};
use crate::http_rounds::{header, interleaved, rows, verdicts, Sender};

const CONNECTIONS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// tokio + tokio-rustls + hyper-util, no library.
    Raw,
    HygieneServe,
}

impl Contender {
    const ALL: [Contender; 2] = [Contender::Raw, Contender::HygieneServe];

    fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw-tls",
            Contender::HygieneServe => "hygiene-serve",
        }
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// Starts the contender's server on 127.0.0.1; its address and the task serving it.
async fn start(
    c: Contender,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let tokio = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tokio.local_addr().expect("local_addr");
    let task = match c {
        Contender::Raw => {
            let acceptor = TlsAcceptor::from(config);
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = tokio.accept().await.expect("accept");
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper_util::service::TowerToHyperService::new(app());
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        }
        Contender::HygieneServe => {
            let mut builder = tcp_hygiene::Builder::new();
            builder
                .idle_timeout(Duration::from_secs(300))
                .read_idle_timeout(Duration::from_secs(300));
            let listener = builder.wrap(tokio).expect("wrap");
            tokio::spawn(async move {
                tcp_hygiene::integration::axum::serve(listener, app())
                    .tls(config)
                    .await
                    .expect("serve");
            })
        }
    };
    (addr, task)
}

/// A keep-alive connection over TLS to `addr`, HTTP/2 or HTTP/1.1 by ALPN.
async fn connect(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, h2: bool) -> Sender {
    let mut config = (**client).clone();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    Sender::handshake(tls, h2).await.0
}

/// `CONNECTIONS` keep-alive clients, connected first, then `requests` each, one after
/// another; requests per second over all of them.
async fn load(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    h2: bool,
    requests: usize,
) -> f64 {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(addr, client, h2).await;
        // The first request outside the timing.
        sender.get("https://localhost/").await;
        senders.push(sender);
    }
    let start = Instant::now();
    let clients: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for _ in 0..requests {
                    sender.get("https://localhost/").await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    (CONNECTIONS * requests) as f64 / start.elapsed().as_secs_f64()
}

fn one(rt: &Runtime, c: Contender, certs: &Certs, h2: bool, requests: usize) -> f64 {
    rt.block_on(async {
        let (addr, server) = start(c, certs.server.clone()).await;
        let rps = load(addr, &certs.client, h2, requests).await;
        server.abort();
        let _ = server.await;
        rps
    })
}

/// Runs `rounds` rounds of `requests` requests per connection, HTTP/1.1 and HTTP/2; the
/// lines to print.
pub(crate) fn run(rounds: usize, requests: usize) -> Vec<String> {
    let mut out = vec![
        format!(
            "https: {rounds} rounds of {CONNECTIONS} keep-alive TLS connections × {requests} requests of GET /, HTTP/1.1 and HTTP/2, contenders interleaved"
        ),
        header(),
    ];
    let mut certs = certs();
    // The hand-written control offers ALPN itself; the serve would add the same.
    let mut server = (*certs.server).clone();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    certs.server = Arc::new(server);
    let rt = crate::common::multi_thread_runtime();
    let names = Contender::ALL.map(Contender::name);
    let mut ratios = Vec::new();
    for (h2, protocol) in [(false, "h1"), (true, "h2")] {
        let values = interleaved(rounds, &Contender::ALL, |c| {
            one(&rt, c, &certs, h2, requests)
        });
        let (lines, medians) = rows(protocol, &names, &values);
        out.extend(lines);
        let metric = format!("https_rps_{protocol}");
        ratios.extend(medians.into_iter().map(|(n, r)| (metric.clone(), n, r)));
    }
    out.extend(verdicts(&ratios, 0.97));
    out
}
