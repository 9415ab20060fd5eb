//! Portable fallback for non-Linux Unix systems: no kernel FIN events (the supervisor
//! sweeps with `MSG_PEEK` instead), no `TCP_INFO`, and the abortive close degrades to
//! `shutdown(Both)`.
//!
//! `MSG_PEEK` misses a FIN that sits behind unread data and can consume a pending reset,
//! which is why Linux does not use it.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{Event, Probe};
use crate::config::Keepalive;
use crate::tcp_info::TcpInfo;

/// Whether the supervisor must sweep connections itself to find peer FINs.
pub(crate) const NEEDS_SWEEP: bool = true;

/// Whether an accepted socket starts with the listening socket's options: not relied on
/// here (systems differ), so each accepted socket gets its own.
pub(crate) const ACCEPT_INHERITS_OPTIONS: bool = false;

/// Whether `TCP_INFO` is there: the kernel's byte counts and timestamps.
pub(crate) const HAS_TCP_INFO: bool = false;

/// No kernel FIN events on this platform; the timer is a tokio `Sleep`.
#[derive(Debug)]
pub(crate) struct Events {
    timer: Mutex<Option<Instant>>,
}

impl Events {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            timer: Mutex::new(None),
        })
    }

    pub(crate) fn register(&self, _socket: BorrowedFd<'_>, _key: u64) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn set_timer(&self, at: Option<Instant>) -> io::Result<()> {
        *self.timer.lock().unwrap_or_else(|e| e.into_inner()) = at;
        Ok(())
    }

    /// Resolves when the timer fires. The supervisor makes a new future after every
    /// `set_timer`, so the deadline read here is current.
    pub(crate) async fn next_batch(&self, out: &mut Vec<Event>) -> io::Result<()> {
        let at = *self.timer.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
        out.push(Event::Timer);
        Ok(())
    }
}

pub(crate) fn tcp_info(_socket: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn disconnect(socket: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&socket).shutdown(std::net::Shutdown::Both)
}

/// Where the socket stands, by peeking at it. A peek that finds a pending error (a reset)
/// consumes it: it is returned so that the caller hands it on, never lost as a clean EOF.
/// A FIN behind unread data goes unseen until the application reads up to it.
pub(crate) fn probe(socket: BorrowedFd<'_>) -> Probe {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(&socket).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => Probe::PeerFin,
        Ok(_) => Probe::Open,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Probe::Open,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Probe::Open,
        Err(e) => Probe::Ended(e.raw_os_error()),
    }
}

/// `TCP_LINGER2` is Linux-only: orphans keep the system's own `FIN_WAIT_2` timeout.
pub(crate) fn set_orphan_fin_wait(_socket: BorrowedFd<'_>, _timeout: Duration) -> io::Result<()> {
    Ok(())
}

/// `TCP_USER_TIMEOUT` is Linux-only: ignored here.
pub(crate) fn set_user_timeout(_socket: &SockRef<'_>, _timeout: Duration) -> io::Result<()> {
    Ok(())
}

/// Only the idle time is portable; interval and count keep the system's values.
pub(crate) fn keepalive(ka: &Keepalive) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(ka.idle())
}
