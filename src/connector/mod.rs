//! Our `Connector`: outbound connections, supervised as accepted ones are.

#[cfg(feature = "hyper")]
mod service;

#[cfg(feature = "hyper")]
pub use service::Connecting;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::ToSocketAddrs;

use crate::admission::{self, Origin};
use crate::config::Config;
use crate::controller::Controller;
use crate::error::Closed;
use crate::shared::Shared;
use crate::state::CloseReason;
use crate::stats::{ConnectionSnapshot, Stats};
use crate::stream::TcpStream;
use crate::supervisor;

/// Makes outbound TCP connections that are supervised like accepted ones: the client's
/// half of TCP hygiene.
///
/// Client connections pile up as server ones do: a pool keeps connections the server
/// closed (`CLOSE_WAIT`); a client whose server vanished writes into a dead connection
/// for ~15 minutes of retransmissions; a connect to a blackholed address waits ~127 s in
/// `SYN_SENT`; a client that closed first can wait in `FIN_WAIT_2` for a server that never
/// answers. [`connect`](Self::connect) bounds the connect with
/// [`connect_timeout`](crate::Builder::connect_timeout), and returns the same
/// [`TcpStream`] as [`TcpListener::accept`](crate::TcpListener::accept), watched by the
/// connector's supervisor with the same rules (close-wait, fin-wait, idle, keepalive and
/// `TCP_USER_TIMEOUT` by default, max age, min rates), handle, close reasons, stats,
/// [`Controller`], events and metrics. The server-only rules (first byte, per-IP limits,
/// accept back-off) do not apply.
///
/// Made by [`Builder::connector`](crate::Builder::connector) inside a tokio runtime.
/// Clones share one supervisor task, which ends once every clone and every stream is
/// gone.
///
/// With the `hyper` feature it is a `tower_service::Service<http::Uri>`, so hyper-util's
/// legacy `Client` and tonic's `Endpoint::connect_with_connector` use it (see
/// `Connecting`, its future, for examples).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn run() -> std::io::Result<()> {
/// let connector = tcp_hygiene::Builder::new()
///     .connect_timeout(Duration::from_secs(3))
///     .user_timeout(Duration::from_secs(10)) // a vanished server: writes fail in 10 s
///     .close_wait_timeout(Duration::from_secs(5))
///     .connector()?;
/// let mut stream = connector.connect("127.0.0.1:7000").await?;
/// stream.write_all(b"ping\n").await?;
/// let mut buf = [0; 64];
/// let n = stream.read(&mut buf).await?;
/// println!("{:?} {:?}", &buf[..n], stream.close_reason());
/// # Ok(()) }
/// ```
///
/// # Pools
///
/// A pooled stream whose server closed it sits in `CLOSE_WAIT`, and a request sent on it
/// fails. Before reusing a stream, a pool asks
/// [`TcpStream::is_peer_closed`] (the supervisor learns of the server's FIN from the
/// kernel, whether or not anyone reads the stream) and drops it if so; one that stays in
/// the pool is closed by the supervisor after `close_wait_timeout` all the same (reason
/// [`CloseReason::CloseWaitTimeout`]).
///
/// ```no_run
/// # async fn run(connector: tcp_hygiene::Connector) -> std::io::Result<()> {
/// use tcp_hygiene::TcpStream;
///
/// let mut idle: Vec<TcpStream> = Vec::new();
/// // Take a live one, dropping those the server has closed meanwhile.
/// let stream = loop {
///     match idle.pop() {
///         Some(stream) if stream.is_peer_closed() => drop(stream),
///         Some(stream) => break stream,
///         None => break connector.connect("127.0.0.1:7000").await?,
///     }
/// };
/// // … use it, then give it back:
/// idle.push(stream);
/// # Ok(()) }
/// ```
///
/// hyper-util's legacy `Client` keeps an HTTP/1 connection in its pool only while its
/// connection task has not read EOF: the server's FIN wakes that task (its idle read),
/// and the pool drops the connection before reuse. What it misses (a task that is not
/// polled, a server that vanished without a FIN) the supervisor ends:
/// `close_wait_timeout`, keepalive and `TCP_USER_TIMEOUT`. Each response carries the
/// connection's [`ConnectionHandle`](crate::ConnectionHandle) in its extensions (through
/// hyper-util's `Connected::extra`), for its close reason or `is_peer_closed`:
///
/// ```no_run
/// # #[cfg(feature = "hyper")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let connector = tcp_hygiene::Builder::new().connector()?;
/// let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
/// let response = client.get("http://127.0.0.1:3000/".parse()?).await?;
/// let handle = response.extensions().get::<tcp_hygiene::ConnectionHandle>();
/// println!("{:?}", handle.map(|h| h.is_peer_closed()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

/// What every clone shares; the last one's drop tells the supervisor.
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The supervisor ends once the connector is gone and so is its last connection.
        self.shared.tx.listener_closed();
    }
}

impl Connector {
    pub(crate) fn with_config(config: Config) -> io::Result<Self> {
        let label = config.metrics_label().unwrap_or("connector").to_owned();
        let shared = supervisor::start(config, &label)?;
        Ok(Self {
            inner: Arc::new(Inner { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Connects to `addr` (resolved as `tokio::net::TcpStream::connect` does, each
    /// address tried in turn), applies the socket options (keepalive,
    /// `TCP_USER_TIMEOUT`, nodelay, linger), and registers the connection with the
    /// connector's supervisor.
    ///
    /// Under [`max_connections`](crate::Builder::max_connections) it first waits until a
    /// stream is released (with several tasks connecting at once, the limit can be passed
    /// by up to their number minus one).
    ///
    /// # Errors
    ///
    /// - `TimedOut`, carrying a [`Closed`] with [`CloseReason::ConnectTimeout`], if the
    ///   connect (resolution and every address) took longer than
    ///   [`connect_timeout`](crate::Builder::connect_timeout);
    /// - the connect's own errors (refused, unreachable, resolution);
    /// - an error once a drain has begun through the [`Controller`], or if the
    ///   supervisor stopped (a bug, logged as an error) or is gone (the runtime is
    ///   shutting down).
    ///
    /// Every failure is counted in [`Stats::connect_errors`].
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future before it completes closes the socket being connected; no
    /// connection is registered.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let shared = self.shared();
        shared.check_supervisor()?;
        if shared.is_draining() {
            shared.counters.connect_failed(false);
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "tcp-hygiene: the connector is draining",
            ));
        }
        admission::wait_for_slot(shared).await;
        let connected = match shared.config.connect_timeout() {
            Some(limit) => match tokio::time::timeout(limit, connect(addr)).await {
                Ok(connected) => connected,
                Err(_) => {
                    shared.counters.connect_failed(true);
                    tracing::debug!(timeout = ?limit, "connect timed out");
                    return Err(timed_out(limit));
                }
            },
            None => connect(addr).await,
        };
        let (io, peer) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                shared.counters.connect_failed(false);
                return Err(e);
            }
        };
        shared.counters.connected();
        // Always admitted: a connector has no per-IP limit.
        let _ = shared.admit(peer.ip());
        admission::apply_options(shared, &io, peer, admission::Inherited::default());
        admission::register(shared, io, peer, Origin::Connected).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Other,
                "tcp-hygiene: the connector's supervisor is gone (the runtime is shutting down)",
            )
        })
    }

    /// A snapshot of this connector's counters: `connected`, `connect_errors`, and the
    /// same closes, states and releases as a listener's.
    pub fn stats(&self) -> Stats {
        self.shared().counters.snapshot()
    }

    /// A snapshot of every connection whose stream is held right now; see
    /// [`TcpListener::connections`](crate::TcpListener::connections).
    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.controller().connections()
    }

    /// The connector's configuration (`first_byte_timeout` and `max_connections_per_ip`
    /// are `None`: they do not apply to a client).
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// A handle on this connector's supervision: stats, the live connections, closing
    /// one, and a drain (which closes the connections by its deadlines; `connect` fails
    /// from its start).
    pub fn controller(&self) -> Controller {
        Controller::new(self.shared().clone())
    }
}

/// Connects to the first address of `addr` that takes the connection, as
/// `tokio::net::TcpStream::connect` does, and says which.
async fn connect(addr: impl ToSocketAddrs) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    let mut last = None;
    for peer in tokio::net::lookup_host(addr).await? {
        match tokio::net::TcpStream::connect(peer).await {
            Ok(io) => return Ok((io, peer)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

#[cold]
fn timed_out(limit: std::time::Duration) -> io::Error {
    let source = io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect_timeout: not connected within {limit:?}"),
    );
    io::Error::new(
        io::ErrorKind::TimedOut,
        Closed {
            reason: CloseReason::ConnectTimeout,
            source,
        },
    )
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("open", &self.shared().open())
            .finish()
    }
}
