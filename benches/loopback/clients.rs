//! The contenders on the client side, for the `connect` figure: raw tokio, the library's
//! `Connector`, and tokio-io-timeout, behind one `Client` trait (the server is a raw
//! tokio listener). Apart from `contenders`, whose server sides the per-poll sections
//! inline: code added there moves the compiler's inlining of their loops.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::common::net::listener_with_backlog;
use crate::contenders::{hygiene_builder, set_options_by_hand, timeout_stream, Contender};
use crate::report::{rows, Row};
use crate::Params;

/// The `connect` figure on runtime `rt`: every contender in every round, each with the
/// client it made once for this runtime.
pub(crate) fn run(rt: &Runtime, suffix: &str, p: &Params) -> Vec<Row> {
    let mut out = Vec::new();
    let mut values = Vec::new();
    let clients = rt.block_on(async { Clients::new() });
    for round in 0..p.rounds * usize::from(p.runs("connect")) {
        let mut r = [0.0; Contender::SLOTS];
        for c in Contender::order(round, Contender::ALL) {
            r[c.index()] = rt.block_on(async {
                with_client!(
                    c,
                    clients,
                    connect_rate(p.accept_burst, p.accept_concurrency)
                )
            });
        }
        values.push(r);
    }
    drop(clients);
    out.extend(rows(&format!("connect_{suffix}"), "k/s", true, &values));
    out
}

/// A client of one contender, for the `connect` figure: it connects, sets what the
/// library would set, and closes at once; the server is a raw tokio listener that
/// accepts and drops. (Each round's listener has a port of its own, so the clients'
/// `TIME_WAIT`s of earlier rounds never hold a port a later round needs.)
pub(crate) trait Client: Clone + Send + Sync + Sized + 'static {
    /// Made inside the runtime (the library's connector spawns its supervisor there).
    fn new() -> Self;
    fn connect_and_close(&self, addr: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
}

#[derive(Clone)]
pub(crate) struct RawClient;

impl Client for RawClient {
    fn new() -> Self {
        Self
    }

    async fn connect_and_close(&self, addr: SocketAddr) -> io::Result<()> {
        let stream = TcpStream::connect(addr).await?;
        set_options_by_hand(&stream);
        drop(stream);
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct HygieneClient(tcp_hygiene::Connector);

impl Client for HygieneClient {
    fn new() -> Self {
        Self(hygiene_builder().connector().expect("connector"))
    }

    async fn connect_and_close(&self, addr: SocketAddr) -> io::Result<()> {
        drop(self.0.connect(addr).await?);
        Ok(())
    }
}

/// The library's connector, its metrics registered with a Prometheus recorder.
#[cfg(feature = "metrics")]
#[derive(Clone)]
pub(crate) struct HygieneMetricsClient(tcp_hygiene::Connector);

#[cfg(feature = "metrics")]
impl Client for HygieneMetricsClient {
    fn new() -> Self {
        static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusRecorder> =
            std::sync::OnceLock::new();
        let recorder = RECORDER
            .get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
        let connector = metrics::with_local_recorder(recorder, || hygiene_builder().connector())
            .expect("connector");
        Self(connector)
    }

    async fn connect_and_close(&self, addr: SocketAddr) -> io::Result<()> {
        drop(self.0.connect(addr).await?);
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct TioClient;

impl Client for TioClient {
    fn new() -> Self {
        Self
    }

    async fn connect_and_close(&self, addr: SocketAddr) -> io::Result<()> {
        let stream = TcpStream::connect(addr).await?;
        set_options_by_hand(&stream);
        drop(timeout_stream(stream));
        Ok(())
    }
}

/// One client of every contender, made once per runtime and used in every round, as an
/// application keeps one connector (its supervisor task, its table of connections).
pub(crate) struct Clients {
    pub(crate) raw: RawClient,
    pub(crate) hygiene: HygieneClient,
    pub(crate) tio: TioClient,
    #[cfg(feature = "metrics")]
    pub(crate) hygiene_metrics: HygieneMetricsClient,
}

impl Clients {
    /// Inside the runtime that runs the rounds.
    pub(crate) fn new() -> Self {
        Self {
            raw: RawClient::new(),
            hygiene: HygieneClient::new(),
            tio: TioClient::new(),
            #[cfg(feature = "metrics")]
            hygiene_metrics: HygieneMetricsClient::new(),
        }
    }
}

/// Runs the generic benchmark `$f(client, args…)` with the client of contender `$c` from
/// `$clients` (a [`Clients`]).
macro_rules! with_client {
    ($c:expr, $clients:expr, $f:ident ( $($arg:expr),* )) => {{
        use $crate::contenders::Contender;
        let clients = &$clients;
        match $c {
            Contender::Raw => $f(clients.raw.clone(), $($arg),*).await,
            Contender::Hygiene => $f(clients.hygiene.clone(), $($arg),*).await,
            Contender::TokioIoTimeout => $f(clients.tio.clone(), $($arg),*).await,
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => $f(clients.hygiene_metrics.clone(), $($arg),*).await,
        }
    }};
}
pub(crate) use with_client;

/// `concurrency` client tasks of the contender connect and close `n` times in all (each
/// task one connection at a time), against a raw tokio listener that accepts and drops;
/// connects per second, until the last client's close. The contender's whole client side
/// is timed: the connect, the socket options, the registration with its supervisor and
/// the release.
async fn connect_rate<C: Client>(client: C, n: usize, concurrency: usize) -> f64 {
    let listener = tokio::net::TcpListener::from_std({
        let l = listener_with_backlog(4096);
        l.set_nonblocking(true).expect("nonblocking");
        l
    })
    .expect("listener");
    let addr = listener.local_addr().expect("local_addr");
    let acceptor = tokio::spawn(async move {
        for _ in 0..n {
            drop(listener.accept().await.expect("accept"));
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in (i..n).step_by(concurrency) {
                    client.connect_and_close(addr).await.expect("connect");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    let elapsed = start.elapsed();
    acceptor.await.expect("acceptor");
    n as f64 / elapsed.as_secs_f64() / 1e3
}
