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

/// One readiness report from the watcher (never produced here).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinEvent {
    pub(crate) id: u64,
    pub(crate) hangup: bool,
    pub(crate) error: bool,
}

/// No kernel FIN events on this platform.
#[derive(Debug)]
pub(crate) struct FinWatcher;

impl FinWatcher {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self)
    }

    pub(crate) fn register(&self, _socket: BorrowedFd<'_>, _id: u64) -> io::Result<()> {
        Ok(())
    }

    pub(crate) async fn next_batch(&self, _out: &mut Vec<FinEvent>) -> io::Result<()> {
        std::future::pending().await
    }
}

pub(crate) fn tcp_info(_socket: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn disconnect(socket: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&socket).shutdown(std::net::Shutdown::Both)
}

pub(crate) fn peer_fin_by_peek(socket: BorrowedFd<'_>) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    matches!(
        SockRef::from(&socket).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Ok(0)
    )
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
