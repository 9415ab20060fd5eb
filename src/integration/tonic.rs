//! tonic 0.14: a gRPC server over a supervised listener.
//!
//! [`TcpStream`] implements tonic's [`Connected`] with tonic's own [`TcpConnectInfo`], so
//! `request.remote_addr()` and `request.local_addr()` keep working in handlers exactly as
//! with tonic's built-in listener. [`TcpListener::into_incoming`] turns the listener into
//! the stream of connections that `serve_with_incoming` takes.
//!
//! HTTP/2 reads its connection continuously, so tonic notices a client that left
//! (`RST_STREAM`, `GOAWAY`, FIN) by itself and cancels the handler; what the supervisor
//! adds for gRPC is mostly the half-open side: keepalive, `TCP_USER_TIMEOUT` and idle
//! timeouts for clients that vanished without a FIN, and `max_connections`.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tcp_hygiene::Builder::new()
//!     .idle_timeout(Duration::from_secs(600))
//!     .bind("127.0.0.1:50051")
//!     .await?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .serve_with_incoming(health, listener.into_incoming())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! With tonic's router (its default `router` feature) it is the same call:
//! `Server::builder().add_service(a).add_service(b).serve_with_incoming(listener.into_incoming())`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::hyper::body::Body;
use ::tonic::transport::server::{Connected, TcpConnectInfo};
use hyper_util::service::TowerToHyperService;
use tokio_stream::Stream;

use super::http::{BoxError, Options, RequestBody, Serve};
use crate::{TcpListener, TcpStream};

/// Serves a gRPC `service` (a generated server, `tonic::service::Routes`, or any tower
/// service of HTTP requests) on every connection of `listener`, HTTP/2 only, each in a
/// task the library can end. `request.remote_addr()` works in handlers, and the
/// connection's [`ConnectionHandle`](crate::ConnectionHandle) is in the request's
/// extensions. See [`Serve`] for the options and what it adds: the connection age
/// becomes GOAWAY, and a graceful shutdown sends GOAWAY and lets streams finish.
///
/// A `tonic::service::Routes` is served as given: call its `prepare()` first, as tonic's
/// own server does, or its routes are built again for every request (an allocation each).
pub fn serve<S, B>(listener: TcpListener, service: S) -> Serve<TowerToHyperService<S>>
where
    S: tower_service::Service<::hyper::Request<RequestBody>, Response = ::hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut options = Options::new(|extensions, handle| {
        extensions.insert(handle.clone());
        extensions.insert(TcpConnectInfo {
            local_addr: handle.local_addr(),
            remote_addr: Some(handle.peer_addr()),
        });
    });
    options.http2_only = true;
    Serve::new(listener, TowerToHyperService::new(service), options)
}

/// After an accept error (only errors that say the listener itself is broken reach
/// here), wait this long before accepting again: tonic polls the next connection at
/// once, and would otherwise spin.
const FATAL_ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// The connection info tonic puts in each request's extensions: tonic's own
/// [`TcpConnectInfo`], so `Request::remote_addr` works.
impl Connected for TcpStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}

impl TcpListener {
    /// The stream of accepted connections, for tonic's `serve_with_incoming`.
    ///
    /// To keep access to the listener (for [`stats`](TcpListener::stats)), put it in an
    /// [`Arc`] and convert a clone with [`Incoming::from`].
    pub fn into_incoming(self) -> Incoming {
        Incoming::from(Arc::new(self))
    }
}

type AcceptFuture = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// A [`Stream`] of supervised connections: [`TcpListener::accept`] in a loop.
///
/// It never ends. Per-connection accept failures are skipped and resource exhaustion
/// backs off inside [`TcpListener::accept`]; an error that says the listener is broken is
/// yielded (tonic logs and skips it) and the next accept waits one second, so the server
/// never spins.
#[must_use = "streams do nothing unless polled"]
pub struct Incoming {
    listener: Arc<TcpListener>,
    accept: Option<AcceptFuture>,
    failed: bool,
}

impl Incoming {
    /// The listener inside.
    pub fn get_ref(&self) -> &TcpListener {
        &self.listener
    }
}

impl From<Arc<TcpListener>> for Incoming {
    fn from(listener: Arc<TcpListener>) -> Self {
        Self {
            listener,
            accept: None,
            failed: false,
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let accept = this.accept.get_or_insert_with(|| {
            let listener = this.listener.clone();
            let failed = this.failed;
            Box::pin(async move {
                if failed {
                    tokio::time::sleep(FATAL_ACCEPT_RETRY).await;
                }
                listener.accept().await.map(|(stream, _peer)| stream)
            })
        });
        let result = ready!(accept.as_mut().poll(cx));
        this.accept = None;
        this.failed = result.is_err();
        if let Err(error) = &result {
            tracing::error!(%error, "accept failed; retrying in 1 s");
        }
        Poll::Ready(Some(result))
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}
