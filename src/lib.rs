//! Keeps a tokio server's TCP connections clean.
//!
//! Servers leak connections in ways every operator has seen in `ss`: `CLOSE_WAIT` piling
//! up because a handler never closed its socket after the peer's FIN, half-open
//! connections that stay `ESTABLISHED` after the peer vanished, `FIN_WAIT_2` that the
//! peer never ends. `tcp-hygiene` wraps `tokio::net::TcpListener` and every stream it
//! accepts: it learns of the peer's FIN from the kernel, enforces keepalive,
//! `TCP_USER_TIMEOUT` and idle timeouts, and closes lingering sockets itself, from a
//! supervisor task, even when the handler that owns them is stuck and never polls again.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = tcp_hygiene::Builder::new()
//!         .close_wait_timeout(Duration::from_secs(5)) // peer sent FIN, we went quiet
//!         .idle_timeout(Duration::from_secs(300))
//!         .bind("127.0.0.1:8080")
//!         .await?;
//!     loop {
//!         let (mut stream, peer) = listener.accept().await?;
//!         tokio::spawn(async move {
//!             let mut buf = vec![0; 4096];
//!             loop {
//!                 match stream.read(&mut buf).await {
//!                     Ok(0) | Err(_) => break,
//!                     Ok(n) => {
//!                         if stream.write_all(&buf[..n]).await.is_err() {
//!                             break;
//!                         }
//!                     }
//!                 }
//!             }
//!             println!("{peer}: {:?}", stream.close_reason());
//!         });
//!     }
//! }
//! ```
//!
//! # How it works
//!
//! - [`TcpListener::accept`] applies socket options (keepalive, `TCP_USER_TIMEOUT`, …),
//!   registers the socket with the listener's supervisor task and returns a
//!   [`TcpStream`] that implements `AsyncRead + AsyncWrite`.
//! - On the hot path the stream only bumps a byte counter per poll; deadlines are held
//!   lazily by the supervisor, one timer for all connections, and idle clocks read the
//!   kernel's own timestamps (`TCP_INFO`) instead of being reset per read.
//! - On Linux, the peer's FIN (and resets, keepalive and user-timeout failures) arrive
//!   as `EPOLLRDHUP` events from a second epoll instance, confirmed with `TCP_INFO`. On
//!   other Unix systems the supervisor sweeps the connections that have not sent FIN every
//!   100 ms instead.
//! - A graceful close from outside is `shutdown(Write)`: our FIN goes out after every
//!   byte the application wrote, its reads return EOF and its writes fail. An abortive
//!   close (only where asked for, or when the peer stopped taking data) is
//!   `connect(AF_UNSPEC)` on Linux: RST. The descriptor is freed when the application
//!   drops the stream; the supervisor never touches a descriptor the application has
//!   closed. At that drop, unread data is discarded (so the close stays a FIN) and data
//!   still on its way is delivered before the socket closes (a lingering close).
//!
//! # Frameworks
//!
//! With the `axum`, `hyper` and `tonic` features, [`integration`] serves each framework
//! over a supervised listener and owns every connection's task: a stuck handler is ended
//! with its connection, hyper's header read timeout and a request-aware keep-alive
//! timeout are on, and a graceful shutdown returns a [`DrainReport`]. [`Controller`]
//! keeps the stats, the live connections, closing one and draining in reach after the
//! listener has moved into the framework.
//!
//! # Observability
//!
//! [`TcpListener::stats`], [`TcpListener::connections`], a hook for every connection
//! event ([`Builder::on_event`]), `Serialize` for the reports (the `serde` feature), and
//! with the `metrics` feature counters, gauges and histograms through the `metrics`
//! facade, for any exporter (the README's "Monitoring" lists them).
//!
//! # The host's view
//!
//! The library sees the connections it accepted. The whole host's view is in a crate of
//! its own, `tcp-hygiene-cli` (the `tool/` folder of this repository): a census that
//! counts every TCP socket on a port (or the host) by state from the kernel's netlink
//! sock_diag, with orphans, owning processes, how long each pile has lingered and a
//! diagnosis of the unusual ones, whichever process owns them; a reaper that destroys
//! lingering sockets of any process (`SOCK_DESTROY`); and the `tcp-hygiene` operator
//! tool with both as commands. Linux only.
//!
//! # Platform support
//!
//! Linux gets everything. Other Unix systems: no `TCP_USER_TIMEOUT`, keepalive idle time
//! only, FIN detection by sweeping, no `TCP_INFO` (idle timeouts count the application's
//! own reads and writes), abortive close degrades to graceful. Windows is not supported.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod conn;
#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod id;
#[cfg(not(loom))]
pub mod integration;
#[cfg(not(loom))]
mod listener;
#[cfg(not(loom))]
mod mailbox;
#[cfg(not(loom))]
mod observe;
#[cfg(not(loom))]
mod rules;
#[cfg(not(loom))]
mod shared;
#[cfg(not(loom))]
mod state;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod stream;
#[cfg(not(loom))]
mod supervisor;
mod sync;
#[allow(unsafe_code)]
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod tcp_info;
#[cfg(not(loom))]
mod time;

#[cfg(not(loom))]
pub use config::{CloseMode, Config, Keepalive, MinDataRate};
#[cfg(not(loom))]
pub use error::ConfigError;
#[cfg(not(loom))]
pub use handle::{ConnectionHandle, Draining, PeerClosed, ReadIdle};
#[cfg(not(loom))]
pub use id::ConnectionId;
#[cfg(not(loom))]
pub use listener::{Builder, Controller, TcpListener};
#[cfg(not(loom))]
pub use observe::{ConnectionEvent, ConnectionEventKind};
#[cfg(not(loom))]
pub use state::{CloseReason, ConnectionState};
#[cfg(not(loom))]
pub use stats::{ConnectionSnapshot, DrainReport, Stats};
#[cfg(not(loom))]
pub use stream::TcpStream;
#[cfg(not(loom))]
pub use tcp_info::{KernelState, TcpInfo};

// Under `--cfg loom` (tokio then leaves out its `net`) only the lock-free protocols are
// built, for their models: `RUSTFLAGS="--cfg loom" cargo test --lib --release loom`.
#[cfg(loom)]
#[allow(unsafe_code, dead_code)]
#[path = "sys/cell.rs"]
mod cell;
#[cfg(loom)]
#[allow(dead_code)]
#[path = "conn/refs.rs"]
mod refs;

/// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
