//! hyper 1 and hyper-util: serving HTTP/1 and HTTP/2 over a supervised listener.
//!
//! [`serve`] owns the accept loop and every connection's task (see
//! [`Serve`] for what that adds: stuck handlers freed at once,
//! hyper's header read timeout, a keep-alive timeout that knows about requests, the
//! connection age done the HTTP way, a graceful shutdown that returns a report).
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use hyper::{Request, Response};
//! use tcp_hygiene::integration::hyper::RequestBody;
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tcp_hygiene::Builder::new()
//!     .close_wait_timeout(Duration::from_secs(5))
//!     .bind("127.0.0.1:3000")
//!     .await?;
//! let service = hyper::service::service_fn(|_: Request<RequestBody>| async {
//!     Ok::<_, Infallible>(Response::new("hello".to_owned()))
//! });
//! let report = tcp_hygiene::integration::hyper::serve(listener, service)
//!     .keep_alive_timeout(Duration::from_secs(30))
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
//! Or with your own accept loop: [`TcpStream`] is
//! `AsyncRead + AsyncWrite + Unpin + Send + 'static`, so hyper-util's `TokioIo::new(stream)` and
//! `hyper_util::server::conn::auto::Builder` take it exactly as they take a
//! `tokio::net::TcpStream`. [`serve_connection`] is that in one call, with the
//! auto-detecting builder (HTTP/1.1, or HTTP/2 with prior knowledge) and upgrades
//! (WebSocket) enabled. Then the library closes connections but cannot end your tasks.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use hyper::body::Incoming;
//! use hyper::{Request, Response};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
//!     Ok(Response::new("hello".to_owned()))
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tcp_hygiene::Builder::new()
//!     .idle_timeout(Duration::from_secs(120))
//!     .bind("127.0.0.1:3000")
//!     .await?;
//! loop {
//!     let (stream, _peer) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let service = hyper::service::service_fn(hello);
//!         if let Err(e) = tcp_hygiene::integration::hyper::serve_connection(stream, service).await {
//!             eprintln!("connection ended with an error: {e}");
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! The same by hand, for a builder with other settings:
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # use hyper::body::Incoming;
//! # use hyper::{Request, Response};
//! # async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> { todo!() }
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto::Builder;
//!
//! # async fn run(listener: tcp_hygiene::TcpListener) -> std::io::Result<()> {
//! let (stream, _peer) = listener.accept().await?;
//! let service = hyper::service::service_fn(hello);
//! let _ = Builder::new(TokioExecutor::new())
//!     .serve_connection(TokioIo::new(stream), service)
//!     .await;
//! # Ok(()) }
//! ```

use ::hyper::body::{Body, Incoming};
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

use super::http::{Options, Serve};
use crate::{TcpListener, TcpStream};

pub use super::http::{BoxError, RequestBody};

/// Serves `service` on every connection of `listener`: HTTP/1.1, or HTTP/2 with prior
/// knowledge, detected per connection by hyper-util's auto builder; upgrades (WebSocket)
/// work. The service receives `Request<`[`RequestBody`]`>` (hyper's `Incoming`, which
/// tells the library when the request has been fully received), and each request
/// carries the connection's [`ConnectionHandle`](crate::ConnectionHandle) in its
/// extensions. See [`Serve`] for the options and what it adds.
pub fn serve<S, B>(listener: TcpListener, service: S) -> Serve<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Serve::new(
        listener,
        service,
        Options::new(|extensions, handle| {
            extensions.insert(handle.clone());
        }),
    )
}

/// Serves one connection with hyper-util's auto builder: HTTP/1.1, or HTTP/2 when the
/// client starts with the HTTP/2 preface (prior knowledge, as gRPC and
/// `curl --http2-prior-knowledge` do); HTTP/1.1 upgrades (WebSocket) are supported.
/// Request handlers run on tokio tasks ([`TokioExecutor`]).
///
/// Returns when the connection ends: the client closed it, or the supervisor did (after
/// an idle or `CLOSE_WAIT` timeout hyper sees EOF or a write error and ends the
/// connection, dropping the handlers' futures).
///
/// # Errors
///
/// Whatever hyper reports for the connection (protocol errors, I/O errors, the
/// supervisor's close reason in a [`Closed`](crate::error::Closed) inside an I/O error).
pub async fn serve_connection<S, B>(stream: TcpStream, service: S) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
}
