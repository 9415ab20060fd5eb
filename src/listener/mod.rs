//! Our `TcpListener`: accept with error back-off and connection limits, socket options,
//! and registration with the supervisor.

mod builder;
mod drain;
mod serve;

use crate::controller::Controller;
pub use builder::Builder;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::ToSocketAddrs;

use crate::admission::{self, Inherited, Origin};
use crate::config::Config;
use crate::shared::Shared;
use crate::stats::{AcceptFailure, ConnectionSnapshot, Counters, Stats};
use crate::stream::TcpStream;
use crate::supervisor;
use crate::sys::AcceptError;

const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A TCP listener whose accepted connections are supervised: FINs are detected by the
/// kernel watcher, timeouts are enforced, and lingering `CLOSE_WAIT` sockets are closed,
/// even when the handler that owns a stream is stuck.
///
/// Made by [`Builder::bind`] or [`Builder::wrap`] ([`TcpListener::bind`] for the
/// defaults). Creating one spawns its supervisor task on the current tokio runtime; the
/// task ends once the listener and all its streams are gone.
///
/// # Examples
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tcp_hygiene::TcpListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (mut stream, _peer) = listener.accept().await?;
///     tokio::spawn(async move {
///         let mut buf = [0; 1024];
///         while let Ok(n) = stream.read(&mut buf).await {
///             if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # }
/// ```
pub struct TcpListener {
    io: tokio::net::TcpListener,
    shared: Arc<Shared>,
    /// Errors in the current run of accept failures (0: accepting normally).
    failing: AtomicU64,
    /// The options the listening socket carries to every accepted socket: not set again
    /// per connection.
    inherited: Inherited,
}

impl TcpListener {
    /// Binds with the default configuration; see [`Builder`] for the options.
    ///
    /// # Errors
    ///
    /// Those of `tokio::net::TcpListener::bind`, or of creating the supervisor.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Builder::new().bind(addr).await
    }

    /// Wraps `listener` and starts its supervisor.
    pub(crate) fn with_config(
        listener: tokio::net::TcpListener,
        config: Config,
    ) -> io::Result<Self> {
        let label = config
            .metrics_label()
            .map(str::to_owned)
            .or_else(|| listener.local_addr().ok().map(|a| a.to_string()))
            .unwrap_or_default();
        let inherited = Inherited::set_on(&listener, &config);
        let shared = supervisor::start(config, &label)?;
        shared.listening.reset(listener.as_raw_fd(), 0);
        Ok(Self {
            io: listener,
            shared,
            failing: AtomicU64::new(0),
            inherited,
        })
    }

    /// Accepts the next connection.
    ///
    /// Per-connection failures (`ECONNABORTED`, `ECONNRESET`, `EPERM` from a firewall, …)
    /// are skipped. Resource failures (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pause
    /// accepting with a bounded exponential back-off (5 ms doubling to 1 s), cut short as
    /// soon as one of this listener's connections is released; they are counted in
    /// [`Stats`] and logged once per episode. Neither kind is returned, so the accept
    /// loop never spins and never dies of them. When `max_connections` is reached this
    /// waits, without accepting, until a connection is released (with several tasks
    /// calling `accept` at once, the limit can be passed by up to their number minus one;
    /// one accept loop, as in `serve`, axum and tonic, holds it exactly).
    ///
    /// Once a drain has begun through a [`Controller`], the listening socket no longer
    /// listens and this waits forever (so that an accept loop owned by axum or tonic
    /// stays quiet).
    ///
    /// # Errors
    ///
    /// Only errors that say the listener itself is broken (e.g. `EBADF`, `EINVAL`), or
    /// that its supervisor stopped (a bug, logged as an error).
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe, like tokio's: if it is dropped before completing, no connection is
    /// lost.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            self.shared.check_supervisor()?;
            if self.shared.admission_closed() {
                std::future::pending::<()>().await;
            }
            admission::wait_for_slot(&self.shared).await;
            // Accept first: a connection already queued is taken without the drain's
            // token being polled (its lock and notifier); the check above saw no drain.
            let accepted = tokio::select! {
                biased;
                accepted = self.io.accept() => accepted,
                () = self.shared.drain.cancelled() => continue,
            };
            match accepted {
                Ok((io, peer)) => {
                    self.recovered();
                    if let Some(stream) = self.admit(io, peer) {
                        return Ok((stream, peer));
                    }
                }
                Err(e) => self.on_accept_error(e).await?,
            }
        }
    }

    /// The local address the listener is bound to.
    ///
    /// # Errors
    ///
    /// Those of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// A snapshot of this listener's counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// A snapshot of every connection whose stream is held right now (id, peer, state,
    /// age, bytes and, on Linux, `TCP_INFO` with its idle times, rtt and
    /// retransmissions), for an admin endpoint. O(open connections), off the hot path;
    /// the same as [`Controller::connections`], which stays usable after the listener has
    /// moved into a framework.
    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.controller().connections()
    }

    /// The listener's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A handle on this listener's supervision (stats, drain, the live connections, closing
    /// one) that stays usable after the listener has moved into axum, hyper or tonic.
    pub fn controller(&self) -> Controller {
        Controller::new(self.shared.clone())
    }

    /// The tokio listener inside.
    pub fn get_ref(&self) -> &tokio::net::TcpListener {
        &self.io
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn admit(&self, io: tokio::net::TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let shared = &self.shared;
        shared.counters.accepted();
        if !shared.admit(peer.ip()) {
            Counters::bump(&shared.counters.rejected_per_ip);
            tracing::debug!(%peer, "rejected: max_connections_per_ip reached");
            return None;
        }
        if shared.admission_closed() {
            // A drain began after this accept's check and may be over already (see
            // `Shared::admission_closed`): the connection is closed, not handed out.
            shared.on_release(peer.ip());
            tracing::debug!(%peer, "accepted as a drain began; closed");
            return None;
        }
        admission::apply_options(shared, &io, peer, self.inherited);
        admission::register(shared, io, peer, Origin::Accepted)
    }

    fn recovered(&self) {
        if self.failing.load(Relaxed) != 0 {
            let errors = self.failing.swap(0, Relaxed);
            tracing::info!(errors, "accepting again");
        }
    }

    async fn on_accept_error(&self, e: io::Error) -> io::Result<()> {
        let counters = &self.shared.counters;
        match AcceptError::of(&e) {
            AcceptError::PerConnection => {
                counters.accept_failed(AcceptFailure::PerConnection);
                tracing::debug!(error = %e, "accept failed for one connection; skipped");
                Ok(())
            }
            AcceptError::Resources => {
                counters.accept_failed(AcceptFailure::Resources);
                let n = self.failing.fetch_add(1, Relaxed);
                if n == 0 {
                    tracing::warn!(error = %e, "accept is out of resources; backing off");
                }
                let delay = BACKOFF_START
                    .saturating_mul(1 << n.min(10))
                    .min(BACKOFF_MAX);
                let released = self.shared.released();
                let paused = std::time::Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = released => {}
                }
                counters.backed_off(paused.elapsed());
                Ok(())
            }
            AcceptError::Fatal => {
                counters.accept_failed(AcceptFailure::Fatal);
                Err(e)
            }
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.listening.forget_fd();
        // The supervisor ends once the listener is gone and so is its last connection.
        self.shared.tx.listener_closed();
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.io.local_addr().ok())
            .field("open", &self.shared.open())
            .finish()
    }
}
