//! Drop-in integrations with web and gRPC frameworks, each behind its Cargo feature.
//!
//! | Feature | Module | What it gives |
//! |---|---|---|
//! | `axum` | `integration::axum` | `axum::serve::Listener` for `TcpListener`, so `axum::serve(listener, app)` works; `ConnectInfo<ConnectionHandle>` for handlers. |
//! | `hyper` | `integration::hyper` | `serve_connection`: HTTP/1 and HTTP/2 over a supervised `TcpStream` with hyper-util's `auto` builder. On the client side (not in this module), `Connector` is a `tower_service::Service<http::Uri>` for hyper-util's legacy `Client` and tonic's `Endpoint::connect_with_connector`. |
//! | `tonic` | `integration::tonic` | tonic's `Connected` for `TcpStream` and `TcpListener::into_incoming` for `serve_with_incoming`. |
//! | `tls` | `Serve::tls` | HTTPS for the three serves (rustls; your config brings its crypto provider): the handshake in the connection's task with a timeout, `close_notify` before the library's FIN. |
//!
//! Without any of these features this module is empty.

// No intra-doc links in the table above: it must build without the features too.

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod http;

#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod hyper;

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

/// The rustls the `tls` feature is built with, for the `ServerConfig` that
/// [`Serve::tls`](http::Serve::tls) takes.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use ::rustls;
