//! Platform code. Everything `unsafe` and everything `cfg(target_os)` lives here.
//!
//! Linux gets the full implementation (`linux.rs`): an `EPOLLRDHUP` watcher for peer FINs,
//! `TCP_INFO`, and `connect(AF_UNSPEC)` to reset a connection without closing its
//! descriptor. Other Unix systems get `fallback.rs`: a periodic `MSG_PEEK` sweep and no
//! kernel counters.

// `--cfg tcp_hygiene_fallback` builds the portable version on Linux too, so that it is
// compiled and tested where CI runs.
#[cfg_attr(all(target_os = "linux", not(tcp_hygiene_fallback)), path = "linux.rs")]
#[cfg_attr(
    any(not(target_os = "linux"), tcp_hygiene_fallback),
    path = "fallback.rs"
)]
mod imp;

pub(crate) use imp::*;

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;

/// The supervisor's access to a socket whose descriptor the application owns.
///
/// The application's stream calls [`SocketGuard::release`] before its descriptor is
/// closed; [`SocketGuard::with`] runs its closure only while the descriptor is still open,
/// under the same lock, so the supervisor can never touch a descriptor number that the
/// kernel has already handed to another socket.
#[derive(Debug)]
pub(crate) struct SocketGuard {
    fd: Mutex<Option<RawFd>>,
}

impl SocketGuard {
    pub(crate) fn new(fd: RawFd) -> Self {
        Self {
            fd: Mutex::new(Some(fd)),
        }
    }

    /// Runs `f` on the socket if the application has not released it yet.
    pub(crate) fn with<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        let fd = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        let raw = (*fd)?;
        // SAFETY: `raw` was an open socket when the guard was created, and the owner calls
        // `release` (which takes this same lock) before closing it. We hold the lock for the
        // whole life of the borrow, so the descriptor stays open and refers to our socket.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        Some(f(borrowed))
    }

    /// Forgets the descriptor; called by the owner right before it closes it.
    pub(crate) fn release(&self) {
        *self.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
