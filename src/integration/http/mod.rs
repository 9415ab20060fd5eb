//! The framework serves' common engine: an accept loop that spawns one task per
//! connection through the library (so that a close by the library ends the task and
//! frees its descriptor at once), hyper-util's auto builder with hyper's timer (so that
//! HTTP/2's keep-alive pings can work), a header read timeout and a keep-alive timeout
//! that know about requests and cost one lazy timer per connection, the connection age
//! done the HTTP way, and a graceful shutdown that returns the drain's report.
//!
//! [`axum::serve`](super::axum::serve), [`hyper::serve`](super::hyper::serve) and
//! [`tonic::serve`](super::tonic::serve) each return a [`Serve`].

mod conn;
#[cfg(feature = "tls")]
mod tls;
mod track;

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ::hyper::body::Body;
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::shared::Shared;
use crate::{CloseMode, CloseReason, ConnectionHandle, ConnectionId, DrainReport, TcpListener};
use track::InFlight;

/// How often a serve at `max_connections` looks for clients waiting in the backlog.
const SHED_CHECK: Duration = Duration::from_millis(100);
pub(crate) use track::Extend;
pub use track::RequestBody;

/// The error type hyper's connections return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP over a supervised listener: one task per connection, spawned through the
/// library. Made by [`axum::serve`](super::axum::serve), [`hyper::serve`](super::hyper::serve)
/// or [`tonic::serve`](super::tonic::serve); `.await` it to serve until the listener
/// breaks, or call [`with_graceful_shutdown`](Self::with_graceful_shutdown).
///
/// What it adds to the listener's own rules (which all keep applying):
///
/// - When the library closes a connection for any reason (`CLOSE_WAIT`, idle, a kernel
///   failure, a drain) it ends the connection's task, so a stuck handler's descriptor
///   and memory are freed at once.
/// - A [`header_read_timeout`](Self::header_read_timeout) (30 s) ends a client that
///   trickles its request head (slowloris).
/// - A [`keep_alive_timeout`](Self::keep_alive_timeout) that runs only while no request
///   is in flight: a slow handler is never cut by it.
/// - The listener's `max_connection_age`, done the HTTP way: at the age (less a random
///   part of [`Builder::max_connection_age_jitter`](crate::Builder::max_connection_age_jitter),
///   so a fleet does not reconnect at once) hyper winds the connection down
///   (`Connection: close` after the current response for HTTP/1, GOAWAY for HTTP/2); the
///   library's own close waits
///   [`Builder::max_connection_age_grace`](crate::Builder::max_connection_age_grace)
///   longer.
///
/// Handlers find the connection's [`ConnectionHandle`] in the request's extensions: as
/// itself under the hyper and tonic serves, as `ConnectInfo<ConnectionHandle>` (beside
/// `ConnectInfo<SocketAddr>`) under axum's. Each entry is an allocation per request, so
/// each serve adds only what its framework's handlers take.
#[must_use = "a Serve does nothing until awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    options: Options,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    header_read_timeout: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
    pub(crate) http2_only: bool,
    pub(crate) extend: Extend,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
    #[cfg(feature = "tls")]
    tls_handshake_timeout: Option<Duration>,
}

impl Options {
    pub(crate) fn new(extend: Extend) -> Self {
        Self {
            header_read_timeout: Some(Duration::from_secs(30)),
            keep_alive_timeout: Some(Duration::from_secs(30)),
            http2_only: false,
            extend,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Some(tls::DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

/// What every connection task of one serve shares.
pub(crate) struct Ctx {
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    header_read_timeout: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
    http2_only: bool,
    extend: Extend,
    /// Set when the drain starts: when connections with no request in flight are closed.
    soft_at: OnceLock<Instant>,
    random: std::collections::hash_map::RandomState,
    /// The connections being served, for shedding under `max_connections`.
    conns: Mutex<HashMap<ConnectionId, Arc<InFlight>>>,
    #[cfg(feature = "tls")]
    tls: Option<tls::Tls>,
}

impl Ctx {
    /// When the connection should start winding down for its age.
    fn winding_down_at(&self, handle: &ConnectionHandle) -> Option<Instant> {
        let age = self.shared.config.max_connection_age()?;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(handle.id().as_u64());
        let u = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        let jitter = self.shared.config.max_connection_age_jitter();
        let early = age.mul_f64((jitter * u).clamp(0.0, 1.0));
        Some(crate::time::later(
            handle.accepted_at(),
            age.saturating_sub(early),
        ))
    }

    /// At `max_connections` with clients waiting in the kernel's backlog, closes as many
    /// connections as there are clients waiting, the oldest first among those with no
    /// request in flight (idle between requests, or still without a whole request head:
    /// a slowloris): they make room, so that an attack that fills every slot does not
    /// turn into an outage for well-behaved clients (as HAProxy and nginx close idle
    /// connections under pressure). Reason `LoadShed`. Linux only (the backlog's length
    /// is read with `TCP_INFO` on the listening socket).
    fn shed(&self) {
        let Some(max) = self.shared.config.max_connections() else {
            return;
        };
        if self.shared.open() < max {
            return;
        }
        let waiting = self
            .shared
            .listening
            .with_fd(crate::sys::tcp_info)
            .and_then(Result::ok)
            .map_or(0, |i| i.unacked as usize);
        if waiting == 0 {
            return;
        }
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut idle: Vec<&Arc<InFlight>> = conns
            .values()
            .filter(|f| f.is_idle() && !f.shed.load(Relaxed))
            .collect();
        idle.sort_by_key(|f| f.handle().accepted_at());
        for in_flight in idle.into_iter().take(waiting) {
            in_flight.shed.store(true, Relaxed);
            in_flight
                .handle()
                .close(CloseMode::Graceful, CloseReason::LoadShed);
        }
        tracing::debug!(waiting, "at max_connections: shedding idle connections");
    }

    /// The drain's soft deadline, once the serve's graceful shutdown has started one
    /// (`None` before, and for a drain started elsewhere).
    fn soft_at(&self) -> Option<Instant> {
        self.soft_at.get().copied()
    }
}

impl<S> Serve<S> {
    pub(crate) fn new(listener: TcpListener, service: S, options: Options) -> Self {
        Self {
            listener,
            service,
            options,
        }
    }

    /// The header read timeout: a client must send a whole request head within this,
    /// from when the server starts waiting for it (the connection's start, or the end of
    /// the previous response), or the connection is closed: the defence against
    /// slowloris, who trickles header bytes more often than any idle timeout. As hyper's
    /// own (which this replaces: hyper's arms a timer for every request head), so it also
    /// ends an HTTP/1 keep-alive connection idle for that long. HTTP/1 only: a connection
    /// that has made an HTTP/2 request, or any under `tonic::serve`, is not subject to
    /// it. Pass `None` to disable. Default is 30 seconds, as hyper's.
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.options.header_read_timeout = timeout.into();
        self
    }

    /// Winds a connection down once it has had no request in flight for this long (Go's
    /// `IdleTimeout`, HAProxy's `timeout http-keep-alive`): HTTP/1 closes, HTTP/2 sends
    /// GOAWAY. A request counts from the moment hyper hands it to the service until its
    /// response body is done, so a slow handler or a long download is never cut by it.
    /// The listener's `idle_timeout` keeps its own meaning (no byte in either direction).
    /// Pass `None` to disable. Default is 30 seconds.
    pub fn keep_alive_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.options.keep_alive_timeout = timeout.into();
        self
    }

    /// Serves HTTPS: every connection starts with a TLS handshake (rustls, through
    /// tokio-rustls), run in the connection's own task, so a client that stalls in it
    /// never holds up the accept loop or anyone else, and bounded by
    /// [`tls_handshake_timeout`](Self::tls_handshake_timeout). If `config` offers no ALPN
    /// protocols, a clone of it offers `h2` and `http/1.1` (`h2` alone under
    /// [`tonic::serve`](super::tonic::serve)); HTTP/2 is then chosen by ALPN.
    ///
    /// What changes over TLS:
    ///
    /// - A handshake that fails (garbage or a plain HTTP request on the TLS port, a
    ///   handshake rustls refuses, a client that resets mid-way) ends the connection,
    ///   is counted in [`Stats::tls_handshake_failures`](crate::Stats::tls_handshake_failures)
    ///   (and the metric `tcp_hygiene_tls_handshake_failures_total`) and logged at debug
    ///   level only: scanners do not fill the logs.
    /// - When the library closes a connection that is idle at the HTTP layer (the idle
    ///   and keep-alive timeouts, the header read timeout, a drain's idle close, the
    ///   connection's age), the TLS layer sends `close_notify` before our FIN, so a
    ///   strict client (Python's `ssl`, which raises `SSLEOFError` on a bare FIN) reads a
    ///   clean end. A connection whose handler is stuck gets a short grace (1 second) for
    ///   it, then the library's TCP-level close as without TLS. Abortive closes (a reset)
    ///   send nothing.
    /// - Every rule of the listener applies unchanged; the byte counts and rates are the
    ///   TLS records' (what the kernel sees).
    ///
    /// The handler's [`ConnectionHandle`] is the TCP connection's, as without TLS.
    ///
    /// The crypto is the config's: build it with the provider of your choice (rustls'
    /// `ring`, as below, or `aws-lc-rs`); the `tls` feature itself pulls in neither.
    /// For ring: `rustls = { version = "0.23", default-features = false, features =
    /// ["ring", "std", "tls12"] }` beside this crate, or any dependency that enables it.
    ///
    /// Needs the `tls` feature. Default: no TLS.
    ///
    /// # Certificate rotation
    ///
    /// The config is fixed for the serve's life, but its certificate need not be: give it
    /// a [`ResolvesServerCert`](rustls::server::ResolvesServerCert) (rustls' own hook,
    /// asked at every handshake) whose certificate you replace when it is renewed.
    /// Connections already open keep theirs; new handshakes get the new one.
    ///
    /// ```no_run
    /// use std::sync::{Arc, RwLock};
    ///
    /// use rustls::pki_types::pem::PemObject;
    /// use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    /// use rustls::server::{ClientHello, ResolvesServerCert};
    /// use rustls::sign::CertifiedKey;
    ///
    /// /// The current certificate; `set` replaces it for the handshakes to come.
    /// #[derive(Debug)]
    /// struct Rotating(RwLock<Arc<CertifiedKey>>);
    ///
    /// impl Rotating {
    ///     fn set(&self, key: CertifiedKey) {
    ///         *self.0.write().unwrap() = Arc::new(key);
    ///     }
    /// }
    ///
    /// impl ResolvesServerCert for Rotating {
    ///     fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
    ///         Some(self.0.read().unwrap().clone())
    ///     }
    /// }
    ///
    /// fn load(provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, Box<dyn std::error::Error>> {
    ///     let chain = CertificateDer::pem_file_iter("cert.pem")?.collect::<Result<Vec<_>, _>>()?;
    ///     let key = PrivateKeyDer::from_pem_file("key.pem")?;
    ///     Ok(CertifiedKey::from_der(chain, key, provider)?)
    /// }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let resolver = Arc::new(Rotating(RwLock::new(Arc::new(load(&provider)?))));
    /// let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_cert_resolver(resolver.clone());
    ///
    /// // Reload the files on SIGHUP (or when your certificate manager says so).
    /// tokio::spawn({
    ///     let (resolver, provider) = (resolver.clone(), provider.clone());
    ///     async move {
    ///         let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    ///         while hup.recv().await.is_some() {
    ///             match load(&provider) {
    ///                 Ok(key) => resolver.set(key),
    ///                 Err(error) => eprintln!("keeping the old certificate: {error}"),
    ///             }
    ///         }
    ///     }
    /// });
    ///
    /// let listener = tcp_hygiene::TcpListener::bind("0.0.0.0:443").await?;
    /// let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    /// tcp_hygiene::integration::axum::serve(listener, app)
    ///     .tls(Arc::new(config))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.options.tls = Some(config);
        self
    }

    /// Closes a client that has not finished its TLS handshake this long after it was
    /// accepted (reason [`CloseReason::TlsHandshakeTimeout`]): a client that connects and
    /// never sends, or stalls inside, its `ClientHello`. Counted from accept, so time
    /// spent waiting to be served counts. Only with [`tls`](Self::tls). The listener's
    /// own rules still apply during the handshake: under a serve its
    /// `min_receive_rate` (240 B/s after a 5-second grace by default) may close a client
    /// that trickles a handshake sooner, for `SlowReceive`.
    ///
    /// Pass `None` to disable. Default is 10 seconds (as axum-server's).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.options.tls_handshake_timeout = timeout.into();
        self
    }

    /// Whether the serve speaks TLS.
    fn tls_on(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.options.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Serves until `signal` completes, then drains and resolves with the report:
    ///
    /// 1. At the signal the listener stops accepting, every handler waiting on
    ///    [`ConnectionHandle::draining`] is woken, and every connection is wound down the
    ///    HTTP way: idle HTTP/1 keep-alive connections close at once, busy ones after
    ///    their current response, HTTP/2 gets GOAWAY. (The plain drain's TCP-level
    ///    half-close does not run: the HTTP layer knows which requests are in flight.)
    /// 2. At `soft`, connections with no request in flight that are still open (clients
    ///    that ignore GOAWAY or `Connection: close`) are closed: `idle_closed`.
    /// 3. At `hard`, the rest are closed and their tasks ended: `forced`.
    ///
    /// `connections == finished + idle_closed + forced`.
    pub fn with_graceful_shutdown<F>(
        self,
        signal: F,
        soft: Duration,
        hard: Duration,
    ) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
            soft,
            hard,
        }
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.options.header_read_timeout)
            .field("keep_alive_timeout", &self.options.keep_alive_timeout)
            .field("tls", &self.tls_on())
            .finish_non_exhaustive()
    }
}

/// [`Serve::with_graceful_shutdown`]: serves until the signal, then drains; resolves with
/// the drain's report.
#[must_use = "a WithGracefulShutdown does nothing until awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
    soft: Duration,
    hard: Duration,
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .field("soft", &self.soft)
            .field("hard", &self.hard)
            .finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let _ = run(
                self,
                None::<std::future::Pending<()>>,
                Duration::ZERO,
                Duration::ZERO,
            )
            .await?;
            Ok(())
        })
    }
}

impl<S, B, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<DrainReport>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<DrainReport>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let report = run(self.serve, Some(self.signal), self.soft, self.hard).await?;
            Ok(report.unwrap_or_default())
        })
    }
}

/// The service a serve's connections call, with the bounds every function of the engine
/// needs, said once (the public impls above spell them out, for their docs).
pub(crate) trait HttpService<B>:
    Service<
        Request<RequestBody>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// A response body the engine can send.
pub(crate) trait HttpBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

async fn run<S, B, F>(
    serve: Serve<S>,
    signal: Option<F>,
    soft: Duration,
    hard: Duration,
) -> io::Result<Option<DrainReport>>
where
    S: HttpService<B> + Clone,
    B: HttpBody,
    F: Future<Output = ()> + Send,
{
    let Serve {
        listener,
        service,
        options,
    } = serve;
    let shared = listener.shared().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The library keeps the header read timeout itself (`conn::drive`): hyper's arms
        // a boxed timer for every request head, a few percent of a small request's cost.
        .header_read_timeout(None)
        // A client that half-closes after its request (legal HTTP/1) gets its response;
        // the library's `close_wait_timeout` bounds how long it may wait for it.
        .half_close(true);
    builder.http2().timer(TokioTimer::new());
    if options.http2_only {
        builder = builder.http2_only();
    }
    // The library's own age close waits until the HTTP grace period has ended.
    shared.served.store(true, Relaxed);
    let ctx = Arc::new(Ctx {
        builder,
        shared: shared.clone(),
        header_read_timeout: options.header_read_timeout,
        keep_alive_timeout: options.keep_alive_timeout,
        http2_only: options.http2_only,
        extend: options.extend,
        soft_at: OnceLock::new(),
        random: std::collections::hash_map::RandomState::new(),
        conns: Mutex::new(HashMap::new()),
        #[cfg(feature = "tls")]
        tls: options
            .tls
            .map(|config| tls::Tls::new(config, options.tls_handshake_timeout, options.http2_only)),
    });
    let handler = {
        let ctx = ctx.clone();
        move |stream| conn::serve(stream, service.clone(), ctx.clone())
    };
    let signal = async move {
        match signal {
            Some(signal) => signal.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(signal);
    // At `max_connections`, look now and then for clients waiting in the backlog.
    let limited = shared.config.max_connections().is_some();
    let mut shed = tokio::time::interval(SHED_CHECK);
    shed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                listener.spawn_supervised(stream, &handler);
            }
            _ = shed.tick(), if limited => ctx.shed(),
            () = &mut signal => break,
        }
    }
    let _ = ctx.soft_at.set(crate::time::later(Instant::now(), soft));
    let report = shared.start_drain(soft, hard, false);
    // Stops accepting: the listening socket closes.
    drop(listener);
    Ok(Some(report.await.unwrap_or_default()))
}
