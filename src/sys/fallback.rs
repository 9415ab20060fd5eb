//! Portable fallback for non-Linux Unix systems: no FIN watcher (the supervisor sweeps
//! with `MSG_PEEK` instead), no `TCP_INFO`, and the abortive close degrades to
//! `shutdown(Both)`.
//!
//! `MSG_PEEK` misses a FIN that sits behind unread data and can consume a pending reset,
//! which is why Linux does not use it.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use crate::stats::TcpInfo;

/// Whether the supervisor must sweep connections itself to find peer FINs.
pub(crate) const NEEDS_SWEEP: bool = true;

/// The event id of the supervisor's own timer.
pub(crate) const TIMER: u64 = u64::MAX;

/// One readiness report from the watcher: here only the timer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinEvent {
    pub(crate) id: u64,
    pub(crate) hangup: bool,
    pub(crate) error: bool,
}

/// No kernel FIN events on this platform; the timer is a tokio `Sleep`.
#[derive(Debug)]
pub(crate) struct FinWatcher {
    timer: std::sync::Mutex<Option<std::time::Instant>>,
}

impl FinWatcher {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            timer: std::sync::Mutex::new(None),
        })
    }

    pub(crate) fn register(&self, _socket: BorrowedFd<'_>, _id: u64) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn set_timer(&self, at: Option<std::time::Instant>) -> io::Result<()> {
        *self.timer.lock().unwrap_or_else(|e| e.into_inner()) = at;
        Ok(())
    }

    /// Resolves when the timer fires. The supervisor makes a new future after every
    /// `set_timer`, so the deadline read here is current.
    pub(crate) async fn next_batch(&self, out: &mut Vec<FinEvent>) -> io::Result<()> {
        let at = *self.timer.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
        out.push(FinEvent {
            id: TIMER,
            hangup: false,
            error: false,
        });
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
pub(crate) fn probe(socket: BorrowedFd<'_>) -> super::Probe {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(&socket).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => super::Probe::PeerFin,
        Ok(_) => super::Probe::Open,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => super::Probe::Open,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => super::Probe::Open,
        Err(e) => super::Probe::Ended(e.raw_os_error()),
    }
}

/// `TCP_LINGER2` is Linux-only: orphans keep the system's own `FIN_WAIT_2` timeout.
pub(crate) fn set_orphan_fin_wait(
    _socket: BorrowedFd<'_>,
    _timeout: std::time::Duration,
) -> io::Result<()> {
    Ok(())
}

/// `TCP_USER_TIMEOUT` is Linux-only: ignored here.
pub(crate) fn set_user_timeout(
    _socket: &SockRef<'_>,
    _timeout: std::time::Duration,
) -> io::Result<()> {
    Ok(())
}

/// Only the idle time is portable; interval and count keep the system's values.
pub(crate) fn keepalive(ka: &crate::config::Keepalive) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(ka.idle())
}
