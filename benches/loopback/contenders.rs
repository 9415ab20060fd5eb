//! The contenders on the server side: raw tokio streams, the library's, and
//! tokio-io-timeout's, each behind one `Server` trait so that every benchmark is written
//! once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

use crate::common::net::set_like_hygiene;

/// Long enough never to fire during a run; the point is that the timers exist.
const TIMEOUT: Duration = Duration::from_secs(300);
const KEEPALIVE: tcp_hygiene::Keepalive = tcp_hygiene::Keepalive::new()
    .with_idle(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);
const USER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    Raw,
    Hygiene,
    TokioIoTimeout,
    /// The library with the `metrics` feature and a Prometheus recorder installed.
    #[cfg(feature = "metrics")]
    HygieneMetrics,
}

impl Contender {
    /// Every contender of this build: with the `metrics` feature, also the library
    /// reporting to a recorder.
    pub(crate) const ALL: &[Contender] = &[
        Contender::Raw,
        Contender::Hygiene,
        Contender::TokioIoTimeout,
        #[cfg(feature = "metrics")]
        Contender::HygieneMetrics,
    ];

    /// The contenders of the per-poll sections. Metrics touch no poll (they are fed at
    /// accept, state changes and release), so the library with them runs the very same
    /// poll code and is left out there.
    pub(crate) const PER_POLL: [Contender; 3] = [
        Contender::Raw,
        Contender::Hygiene,
        Contender::TokioIoTimeout,
    ];

    /// How many slots a round's `[f64; SLOTS]` has: one per possible contender.
    pub(crate) const SLOTS: usize = 4;

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw",
            Contender::Hygiene => "hygiene",
            Contender::TokioIoTimeout => "tokio-io-timeout",
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => "hygiene+metrics",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The contenders of `among` for round `round`, rotated so that none always runs
    /// first; only those named in `LOOPBACK_CONTENDERS` (comma-separated) if it is set,
    /// for profiling one contender alone.
    pub(crate) fn order(round: usize, among: &[Contender]) -> Vec<Contender> {
        let mut all = among.to_vec();
        all.rotate_left(round % among.len().max(1));
        let only = std::env::var("LOOPBACK_CONTENDERS").ok();
        all.into_iter()
            .filter(|c| {
                only.as_deref()
                    .is_none_or(|o| o.split(',').any(|n| n == c.name()))
            })
            .collect()
    }
}

/// A listener of one contender; its streams are what the benchmarks measure.
pub(crate) trait Server: Send + Sync + Sized + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn bind() -> impl Future<Output = Self> + Send;
    fn local_addr(&self) -> SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// What the library sets on every accepted socket, set by hand for the other contenders.
pub(crate) fn set_options_by_hand(stream: &TcpStream) {
    set_like_hygiene(SockRef::from(stream), KEEPALIVE, USER_TIMEOUT);
    stream.set_nodelay(true).expect("nodelay");
}

pub(crate) fn hygiene_builder() -> tcp_hygiene::Builder {
    let mut b = tcp_hygiene::Builder::new();
    b.close_wait_timeout(TIMEOUT)
        .fin_wait_timeout(TIMEOUT)
        .idle_timeout(TIMEOUT)
        .read_idle_timeout(TIMEOUT)
        .write_idle_timeout(TIMEOUT)
        .first_byte_timeout(TIMEOUT)
        .max_connection_age(TIMEOUT * 10)
        .keepalive(KEEPALIVE)
        .user_timeout(USER_TIMEOUT)
        .nodelay(true);
    b
}

pub(crate) struct RawServer(TcpListener);

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

pub(crate) struct HygieneServer(tcp_hygiene::TcpListener);

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

/// The library's listener, its metrics registered with a Prometheus recorder (the
/// exporter the metrics example serves), which then receives every update.
#[cfg(feature = "metrics")]
pub(crate) struct HygieneMetricsServer(tcp_hygiene::TcpListener);

#[cfg(feature = "metrics")]
impl Server for HygieneMetricsServer {
    type Stream = tcp_hygiene::TcpStream;

    async fn bind() -> Self {
        static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusRecorder> =
            std::sync::OnceLock::new();
        let recorder = RECORDER
            .get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listener = metrics::with_local_recorder(recorder, || hygiene_builder().wrap(listener))
            .expect("wrap");
        Self(listener)
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("local_addr")
    }

    async fn accept(&self) -> io::Result<tcp_hygiene::TcpStream> {
        Ok(self.0.accept().await?.0)
    }
}

pub(crate) struct TioServer(TcpListener);

pub(crate) fn timeout_stream(stream: TcpStream) -> Pin<Box<TimeoutStream<TcpStream>>> {
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
    ($c:expr, $f:ident ( $($arg:expr),* )) => {{
        use $crate::contenders::{Contender, HygieneServer, RawServer, Server, TioServer};
        match $c {
            Contender::Raw => $f(RawServer::bind().await, $($arg),*).await,
            Contender::Hygiene => $f(HygieneServer::bind().await, $($arg),*).await,
            Contender::TokioIoTimeout => $f(TioServer::bind().await, $($arg),*).await,
            #[cfg(feature = "metrics")]
            Contender::HygieneMetrics => {
                $f($crate::contenders::HygieneMetricsServer::bind().await, $($arg),*).await
            }
        }
    }};
}
pub(crate) use with_server;
