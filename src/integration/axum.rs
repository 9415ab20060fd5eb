//! axum 0.8 over a supervised listener, two ways.
//!
//! [`serve`] (this crate's) owns the accept loop and every connection's task: when the
//! library closes a connection it ends the handler's task too, so a stuck handler's
//! descriptor is freed at once; hyper's header read timeout works (slowloris); a
//! keep-alive timeout runs only between requests; the connection age is done the HTTP
//! way; a graceful shutdown returns the drain's report (see [`Serve`]). Handlers can take
//! `ConnectInfo<ConnectionHandle>` and `ConnectInfo<SocketAddr>` without
//! `into_make_service_with_connect_info`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{routing::get, Router};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tcp_hygiene::Builder::new()
//!     .close_wait_timeout(Duration::from_secs(5))
//!     .bind("127.0.0.1:3000")
//!     .await?;
//! let app = Router::new().route("/", get(|| async { "ok" }));
//! let report = tcp_hygiene::integration::axum::serve(listener, app)
//!     .with_graceful_shutdown(
//!         async { tokio::signal::ctrl_c().await.ok(); },
//!         Duration::from_secs(5),
//!         Duration::from_secs(30),
//!     )
//!     .await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```
//!
//! `axum::serve(listener, app)` works too: [`TcpListener`] implements
//! [`axum::serve::Listener`], so it replaces `tokio::net::TcpListener` unchanged. Every
//! connection axum accepts is then supervised (no socket lingers in `CLOSE_WAIT` after
//! the client leaves, idle connections are closed after `idle_timeout`), but axum owns
//! the tasks: a stuck handler keeps its descriptor until hyper drops it, and the drain
//! and stats are reached through [`TcpListener::controller`].
//!
//! Handlers can take `ConnectInfo<ConnectionHandle>` to learn whether the client is still
//! there ([`ConnectionHandle::is_peer_closed`], [`ConnectionHandle::peer_closed`]) and stop
//! work on behalf of a client that has left.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use tcp_hygiene::ConnectionHandle;
//!
//! async fn report(ConnectInfo(conn): ConnectInfo<ConnectionHandle>) -> String {
//!     tokio::select! {
//!         // Stop as soon as the client hangs up (seen by the kernel, not by reads).
//!         _ = conn.peer_closed() => String::new(),
//!         _ = tokio::time::sleep(Duration::from_secs(10)) => format!("done for {}", conn.peer_addr()),
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tcp_hygiene::Builder::new()
//!     .close_wait_timeout(Duration::from_secs(5))
//!     .idle_timeout(Duration::from_secs(120))
//!     .bind("127.0.0.1:3000")
//!     .await?;
//! let app = Router::new().route("/report", get(report));
//! axum::serve(listener, app.into_make_service_with_connect_info::<ConnectionHandle>()).await
//! # }
//! ```
//!
//! # `ConnectInfo<SocketAddr>`
//!
//! axum implements `Connected` for `SocketAddr` only for its own listener types, and
//! Rust's orphan rule forbids this crate from adding the same impl for [`TcpListener`].
//! Either read the address from the handle ([`ConnectionHandle::peer_addr`]), or wrap the
//! listener with axum's own [`ListenerExt::tap_io`](::axum::serve::ListenerExt::tap_io),
//! for which axum provides `Connected` for the listener's address type:
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::{extract::ConnectInfo, routing::get, serve::ListenerExt, Router};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tcp_hygiene::TcpListener::bind("127.0.0.1:3000").await?;
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
//! );
//! axum::serve(
//!     listener.tap_io(|_| {}),
//!     app.into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await
//! # }
//! ```
//!
//! `ConnectInfo<ConnectionHandle>` works with the `tap_io` wrapper too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ::axum::extract::connect_info::Connected;
use ::axum::extract::ConnectInfo;
use ::axum::serve::{IncomingStream, Listener, TapIo};
use ::axum::Router;
use hyper_util::service::TowerToHyperService;

use super::http::{Options, Serve};
use crate::{ConnectionHandle, TcpListener, TcpStream};

/// Serves `app` on every connection of `listener` (HTTP/1.1 and HTTP/2), each in a task
/// the library can end. Handlers can take `ConnectInfo<ConnectionHandle>` and
/// `ConnectInfo<SocketAddr>` (the bare `ConnectionHandle` is not in the extensions: one
/// allocation less per request). See [`Serve`] for the options and what it adds.
pub fn serve(listener: TcpListener, app: Router) -> Serve<TowerToHyperService<Router>> {
    Serve::new(
        listener,
        // As `axum::serve` (through `into_make_service`) does: the handlers become routes
        // once, here, not on every request (a clone of the boxed handler, an allocation).
        TowerToHyperService::new(app.with_state(())),
        Options::new(|extensions, handle| {
            extensions.insert(ConnectInfo(handle.clone()));
            extensions.insert(ConnectInfo(handle.peer_addr()));
        }),
    )
}

/// How long `accept` waits after an error that says the listener itself is broken, as
/// axum does for its own listeners.
const FATAL_ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// `axum::serve(listener, app)` with a supervised listener.
///
/// `accept` never returns an error, as axum requires: [`TcpListener::accept`] already skips
/// per-connection failures and backs off on resource exhaustion (`EMFILE`, …); any other
/// error is logged and retried after one second, like axum's own implementation.
impl Listener for TcpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match TcpListener::accept(self).await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::error!(%error, "accept failed; retrying in 1 s");
                    tokio::time::sleep(FATAL_ACCEPT_RETRY).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        TcpListener::local_addr(self)
    }
}

/// `ConnectInfo<ConnectionHandle>` with
/// `app.into_make_service_with_connect_info::<ConnectionHandle>()`.
impl Connected<IncomingStream<'_, TcpListener>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        stream.io().handle()
    }
}

/// `ConnectInfo<ConnectionHandle>` when the listener is wrapped with axum's `tap_io`.
impl<F> Connected<IncomingStream<'_, TapIo<TcpListener, F>>> for ConnectionHandle
where
    F: FnMut(&mut TcpStream) + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, TapIo<TcpListener, F>>) -> Self {
        stream.io().handle()
    }
}
