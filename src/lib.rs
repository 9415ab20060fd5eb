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
//! - On the hot path the stream only bumps a counter per poll; deadlines are held lazily
//!   by the supervisor, one timer for all connections, and idle clocks read the kernel's
//!   own timestamps (`TCP_INFO`) instead of being reset per read.
//! - On Linux, the peer's FIN (and resets, keepalive and user-timeout failures) arrive as
//!   `EPOLLRDHUP` events from a second epoll instance in which every accepted socket is
//!   registered (edge-triggered, RDHUP only: data arriving never wakes it), confirmed
//!   with `TCP_INFO`. On other Unix systems the supervisor sweeps the connections that
//!   have not sent FIN every 100 ms instead.
//! - The rules are data: a table with one row per rule (its close reason, FIN or reset,
//!   the clock it reads, the states in which it applies) read by one pure function from a
//!   sample of the connection (its state, the kernel's `TCP_INFO`, the instant) to an
//!   outcome. The supervisor is the I/O around that function. The rules are tested
//!   without sockets (every rule in every reachable state, properties over random event
//!   sequences), the lock-free protocols with loom, and the I/O with real sockets.
//!
//! # When the handler is stuck
//!
//! Every rule is enforced by the supervisor, not inside `poll_read`, so it holds when
//! nobody polls the stream. When a rule fires the supervisor calls `shutdown(Write)` on
//! the socket: the peer gets our FIN after every byte the application wrote, the socket
//! leaves `CLOSE_WAIT` (`LAST_ACK`, then gone), the application's pending read is woken
//! and returns EOF (after whatever the kernel already holds), and its writes fail with an
//! `io::Error` carrying [`error::Closed`] and the reason. Not `shutdown(Both)`: once the
//! receive side is shut down, Linux resets the connection at the peer's next byte and
//! drops everything still queued (`TCPAbortOnData`). A reset (`connect(AF_UNSPEC)` on
//! Linux) is only for [`CloseMode::Abortive`], a peer that stopped taking data
//! (`write_idle_timeout`, `min_send_rate`) and a FIN the peer never answers
//! (`fin_wait_timeout`).
//!
//! The descriptor belongs to the application and is freed when it drops the stream. The
//! supervisor can never act on a descriptor number the application has closed and the
//! kernel reused: the stream releases its registration (under a lock the supervisor holds
//! while it acts) before the descriptor is closed. Tasks spawned with
//! [`TcpListener::serve`] and the framework serves' tasks are aborted with their
//! connection, so a stuck handler's descriptor and memory are freed at once. If the
//! supervisor task ever ended abnormally (a bug; no input can make it panic), it says so
//! with an `error!` event and `accept` returns an error instead of serving unsupervised
//! connections.
//!
//! # Closing without losing a byte
//!
//! Dropping a stream never costs the peer a byte either. Unread data is discarded first
//! (closing with unread data sends RST, which drops the send queue). If data is still on
//! its way and the peer may still send, the supervisor keeps the socket open (a
//! *lingering close*, as nginx does): an orphan would be reset at the peer's next byte,
//! an HTTP/2 client's WINDOW_UPDATE say. It reads and discards what arrives and closes
//! once everything is acknowledged; `write_idle_timeout` and `fin_wait_timeout` bound it.
//! Past that (or on other systems) the orphan is the kernel's, bounded by
//! `TCP_USER_TIMEOUT` (lowered to `write_idle_timeout` if that is shorter) and
//! `TCP_LINGER2` (from `fin_wait_timeout`). A socket with `SO_LINGER` 0 is left to reset.
//!
//! # Deadlines
//!
//! Idle timeouts are lazy: the I/O path only bumps a counter, and the supervisor looks
//! when a deadline comes due. On Linux a look reads the kernel's own timestamps
//! (`TCP_INFO`: the last data received and sent), so it knows when the wire was last used
//! and the next look goes straight to the true deadline: one look per timeout while a
//! connection is busy, one in all for a silent one. A connection is closed between
//! `timeout` and `timeout + 10 ms + timeout/64` after its last byte (the 10 ms cover the
//! kernel's jiffies, the 1/64 lets looks that fall due together share a wake-up), never
//! before; a handler that does not poll is idle only when the wire is. Where only
//! counters are known (other systems, and the `CLOSE_WAIT` and `FIN_WAIT` clocks, which
//! count the peer's acknowledgements), the looks are `timeout / 8` apart and the close
//! comes within `timeout × 1.125`. `write_idle_timeout` and `min_send_rate` are looked at
//! only while data is queued, `min_receive_rate` only while the peer owes data: the
//! stream tells the supervisor when that starts, so a quiet connection costs nothing.
//! After the stream says it wrote, the supervisor looks within a pause (a sixteenth of
//! the shorter of those two settings, at most 250 ms) and only then asks to hear of the
//! next write, so a connection answering many requests costs one look a pause; those
//! two rules may start that pause late.
//!
//! # Dead peers: keepalive and the user timeout
//!
//! A half-open connection (the peer crashed, was unplugged, or a NAT forgot it) gets no
//! FIN and no RST; only sending reveals it. When the kernel gives up, the supervisor
//! learns of it from the same watcher that sees FINs, records the reason
//! ([`CloseReason::KeepaliveFailed`], [`CloseReason::UserTimeout`]) and closes the
//! connection even if the handler never polls again; the handler's next read returns the
//! kernel's error (`TimedOut`, `ConnectionReset`, …), not a clean EOF.
//!
//! When `TCP_USER_TIMEOUT` is set, Linux uses it instead of the probe count to end a
//! probing keepalive (`tcp_keepalive_timer`): the connection ends at the first probe time
//! `idle + k × interval` (k ≥ 1) that is at least the user timeout. So:
//!
//! - `user_timeout` left at its default follows the keepalive: it equals
//!   `idle + interval × retries`, and keepalive keeps its own bound (keepalive 1 s / 1 s /
//!   3 alone: gone in 4 s).
//! - Both set, user timeout shorter: the idle connection ends after the first unanswered
//!   probe past the user timeout. Longer: probing goes on past `retries` until the user
//!   timeout. The user timeout wins either way, rounded up to a probe time.
//! - `user_timeout(None)`: the probe count decides, and unacknowledged data is retried for
//!   the kernel's `tcp_retries2` (~15 min).
//!
//! # Clients
//!
//! [`Builder::connector`] makes a [`Connector`] whose [`connect`](Connector::connect)
//! returns the same supervised [`TcpStream`], for a client's connections: a connect
//! bounded by `connect_timeout`, a pooled connection the server closed taken out of
//! `CLOSE_WAIT`, a write to a vanished server failed by `TCP_USER_TIMEOUT`, our
//! `FIN_WAIT_2` bounded. With the `hyper` feature it plugs into hyper-util's legacy
//! `Client` and tonic's `Endpoint::connect_with_connector`.
//!
//! # Frameworks
//!
//! With the `axum`, `hyper` and `tonic` features, [`integration`] serves each framework
//! over a supervised listener and owns every connection's task: a stuck handler is ended
//! with its connection, hyper's header read timeout and a request-aware keep-alive
//! timeout are on, slow bodies and slow readers are bounded by default, and a graceful
//! shutdown returns a [`DrainReport`]. With the `tls` feature they terminate TLS
//! themselves: the handshake in the connection's task under a timeout, close_notify
//! before every library close of an idle connection. [`Controller`] keeps the stats, the live
//! connections, closing one and draining in reach after the listener has moved into the
//! framework.
//!
//! # Observability
//!
//! [`TcpListener::stats`], [`TcpListener::connections`], a hook for every connection
//! event ([`Builder::on_event`]), `Serialize` for the reports (the `serde` feature), and
//! with the `metrics` feature these, through the [`metrics`](https://docs.rs/metrics)
//! facade for any exporter. Install the recorder before building the listener: a listener
//! registers its metrics once, and every update after that is one atomic operation on a
//! handle, at accept, at a state change, in the supervisor or at release, never per read
//! or write. Every metric carries `listener`: the bound address, or
//! `Builder::metrics_label`.
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `tcp_hygiene_connections_accepted_total` | counter | | Connections accepted. |
//! | `tcp_hygiene_connections_connected_total` | counter | | Connections a [`Connector`] made. |
//! | `tcp_hygiene_connect_errors_total` | counter | | Failed connects of a [`Connector`], timeouts included. |
//! | `tcp_hygiene_tls_handshake_failures_total` | counter | | TLS handshakes that failed under a serve with TLS (`tls` feature). |
//! | `tcp_hygiene_connections_open` | gauge | `state`: `open`, `peer_closed`, `locally_closed`, `closed` | Connections whose stream the application holds. |
//! | `tcp_hygiene_connections_closed_total` | counter | `reason`: every [`CloseReason`], `peer`, `application` | How each connection ended; each counts once. |
//! | `tcp_hygiene_accept_errors_total` | counter | `kind`: `per_connection`, `resources`, `fatal` | Failed `accept` calls. |
//! | `tcp_hygiene_accept_backoff_seconds_total` | gauge that only grows | | Time spent backing off after accept ran out of resources. |
//! | `tcp_hygiene_connection_duration_seconds` | histogram | | From accept to release. |
//! | `tcp_hygiene_close_wait_seconds` | histogram | | From the peer's FIN (as the supervisor saw it) to our close. |
//! | `tcp_hygiene_fin_detect_seconds` | histogram | | From the FIN's arrival (the kernel's `tcpi_last_ack_recv`, to the jiffy) to the supervisor's seeing it. Linux only. |
//! | `tcp_hygiene_drain_connections` | gauge | `fate`: `connections`, `finished`, `idle_closed`, `forced` | The last drain's [`DrainReport`]. |
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
mod admission;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod conn;
#[cfg(not(loom))]
mod connector;
#[cfg(not(loom))]
mod controller;
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
#[cfg(all(not(loom), feature = "hyper"))]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use connector::Connecting;
#[cfg(not(loom))]
pub use connector::Connector;
#[cfg(not(loom))]
pub use controller::Controller;
#[cfg(not(loom))]
pub use error::ConfigError;
#[cfg(not(loom))]
pub use handle::{ConnectionHandle, Draining, PeerClosed, ReadIdle};
#[cfg(not(loom))]
pub use id::ConnectionId;
#[cfg(not(loom))]
pub use listener::{Builder, TcpListener};
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
