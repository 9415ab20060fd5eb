//! hyper 1 and hyper-util: serving HTTP/1 and HTTP/2 over a supervised stream.
//!
//! [`TcpStream`] is `AsyncRead + AsyncWrite + Unpin + Send + 'static`, so hyper-util's
//! `TokioIo::new(stream)` and `hyper_util::server::conn::auto::Builder` take it exactly as
//! they take a `tokio::net::TcpStream`. [`serve_connection`] is that in one call, with
//! the auto-detecting builder (HTTP/1.1, or HTTP/2 with prior knowledge) and upgrades
//! (WebSocket) enabled.
//!
//! # Examples
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

use std::error::Error as StdError;

use ::hyper::body::{Body, Incoming};
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

use crate::TcpStream;

/// The error type hyper's connections return.
pub type BoxError = Box<dyn StdError + Send + Sync>;

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
