//! What an accepted and a connected stream share on their way in: the wait for a slot
//! under `max_connections`, the socket options, and registration with the supervisor.
//! [`TcpListener`](crate::TcpListener) adds the per-IP limit and the accept back-off
//! around it, [`Connector`](crate::Connector) the connect and its timeout.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::Config;

use socket2::SockRef;

use crate::conn::{Conn, ConnRef, Flags};
use crate::observe::ConnectionEventKind;
use crate::shared::Shared;
use crate::state::ConnectionState;
use crate::stats::Counters;
use crate::stream::TcpStream;
use crate::sys;

/// How a connection came to be: the first event of its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Accepted,
    Connected,
}

/// Waits until fewer than `max_connections` streams are held (at once if there is no
/// limit).
pub(crate) async fn wait_for_slot(shared: &Shared) {
    let Some(max) = shared.config.max_connections() else {
        return;
    };
    loop {
        let released = shared.released();
        tokio::pin!(released);
        released.as_mut().enable();
        if shared.open() < max {
            return;
        }
        released.await;
    }
}

/// Sets the configured socket options on a new connection's socket. A failing option is
/// counted and logged; the connection continues without it.
pub(crate) fn apply_options(
    shared: &Shared,
    io: &tokio::net::TcpStream,
    peer: SocketAddr,
    inherited: Inherited,
) {
    let c = &shared.config;
    let sock = SockRef::from(io);
    let mut failures = Vec::new();
    if let (Some(ka), false) = (&c.keepalive(), inherited.keepalive) {
        if let Err(e) = sock.set_tcp_keepalive(&sys::keepalive(ka)) {
            failures.push(("keepalive", e));
        }
    }
    if let (Some(t), false) = (c.user_timeout(), inherited.user_timeout) {
        if let Err(e) = sys::set_user_timeout(&sock, t) {
            failures.push(("user_timeout", e));
        }
    }
    if c.nodelay() && !inherited.nodelay {
        if let Err(e) = io.set_nodelay(true) {
            failures.push(("nodelay", e));
        }
    }
    if let (Some(l), false) = (c.linger(), inherited.linger) {
        if let Err(e) = sock.set_linger(Some(l)) {
            failures.push(("linger", e));
        }
    }
    for (option, error) in failures {
        Counters::bump(&shared.counters.socket_option_failures);
        tracing::warn!(%peer, option, %error, "socket option failed; connection continues without it");
    }
}

/// Which of the configured socket options are set on the listening socket, where the
/// kernel copies them into every socket it accepts (Linux: the accepted socket starts as
/// a copy of the listener's; `tests/accept.rs` checks each option on accepted sockets),
/// so that an accept costs no `setsockopt` for them. An option that the listening socket
/// refused, or a platform where inheritance is not relied on, is set on each accepted
/// socket instead. A connected socket inherits nothing (`Inherited::default()`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Inherited {
    pub(crate) keepalive: bool,
    pub(crate) user_timeout: bool,
    pub(crate) nodelay: bool,
    pub(crate) linger: bool,
}

impl Inherited {
    /// Sets the configured options on the listening socket, where accepted sockets
    /// inherit them; which ones it set.
    pub(crate) fn set_on(listener: &tokio::net::TcpListener, c: &Config) -> Self {
        if !sys::ACCEPT_INHERITS_OPTIONS {
            return Self::default();
        }
        let sock = SockRef::from(listener);
        Self {
            keepalive: match &c.keepalive() {
                Some(ka) => sock.set_tcp_keepalive(&sys::keepalive(ka)).is_ok(),
                None => false,
            },
            user_timeout: match c.user_timeout() {
                Some(t) => sys::set_user_timeout(&sock, t).is_ok(),
                None => false,
            },
            nodelay: c.nodelay() && sock.set_tcp_nodelay(true).is_ok(),
            linger: match c.linger() {
                Some(l) => sock.set_linger(Some(l)).is_ok(),
                None => false,
            },
        }
    }
}

/// Whether a new connection's stream is asked from the start to say when it writes: a
/// rule waits for queued data (`write_idle_timeout`, `min_send_rate`), which only
/// `TCP_INFO` shows.
pub(crate) fn watches_writes_from_accept(shared: &Shared) -> bool {
    let (_, send_rate) = shared.config.rates(shared.served.load(Relaxed));
    (shared.config.write_idle_timeout().is_some() || send_rate.is_some()) && sys::HAS_TCP_INFO
}

/// Registers a connection already counted as open ([`Shared::admit`]) with the
/// supervisor and wraps it; `None` (and the count undone) if the supervisor is gone, as
/// when the runtime shuts down: nothing would supervise it.
pub(crate) fn register(
    shared: &Arc<Shared>,
    io: tokio::net::TcpStream,
    peer: SocketAddr,
    origin: Origin,
) -> Option<TcpStream> {
    // The rules that apply only while data is queued (Linux) or owed are looked at
    // only once a write or a read says so, from the first on.
    let (receive_rate, _) = shared.config.rates(shared.served.load(Relaxed));
    let mut watch = Flags::NONE;
    if watches_writes_from_accept(shared) {
        watch = watch | Flags::WATCH_WRITES;
    }
    if receive_rate.is_some() {
        watch = watch | Flags::WATCH_READS;
    }
    let Some((page, index)) = shared.table.occupy(shared, io.as_raw_fd(), peer, watch) else {
        shared.on_release(peer.ip());
        return None;
    };
    let conn = Conn::new(page, index);
    shared.counters.enter_state(ConnectionState::Open);
    shared.tx.register(conn.id());
    conn.event(match origin {
        Origin::Accepted => ConnectionEventKind::Accepted,
        Origin::Connected => ConnectionEventKind::Connected,
    });
    Some(TcpStream::new(io, ConnRef::adopt(conn)))
}
