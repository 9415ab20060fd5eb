//! Platform code. Everything `unsafe` and everything `cfg(target_os)` lives here.
//!
//! Linux gets the full implementation (`linux.rs`): the supervisor's events (an
//! `EPOLLRDHUP` epoll for peer FINs and a timerfd), `TCP_INFO`, `TCP_LINGER2`, and
//! `connect(AF_UNSPEC)` to reset a connection without closing its descriptor. Other Unix
//! systems get `fallback.rs`: a periodic `MSG_PEEK` sweep and no kernel counters.
//! `cell.rs` holds what a connection's task and the supervisor share.

// `--cfg tcp_hygiene_fallback` builds the portable version on Linux too, so that it is
// compiled and tested where CI runs.
#[cfg_attr(all(target_os = "linux", not(tcp_hygiene_fallback)), path = "linux.rs")]
#[cfg_attr(
    any(not(target_os = "linux"), tcp_hygiene_fallback),
    path = "fallback.rs"
)]
mod imp;

mod cell;

pub(crate) use cell::SocketCell;
#[cfg(test)]
pub(crate) use cell::USER_BITS;
pub(crate) use imp::*;

/// What the supervisor's event queue reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The supervisor's deadline came.
    Timer,
    /// Something happened to the socket registered under `key`: the peer's FIN (a read
    /// hang-up), a hang-up of both directions (`hangup`: a reset, a timeout, or both
    /// FINs), or a pending error (`error`). Not on the portable implementation, which
    /// has no kernel events.
    #[cfg_attr(any(not(target_os = "linux"), tcp_hygiene_fallback), allow(dead_code))]
    Socket { key: u64, hangup: bool, error: bool },
}

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;

/// What a look at a socket the kernel watcher does not cover found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing to report.
    Open,
    /// The peer has sent FIN.
    PeerFin,
    /// The connection is over (reset, timed out, or both FINs exchanged), with the
    /// socket error if the look consumed it.
    Ended(Option<i32>),
}

/// `Instant`'s own clock in nanoseconds, where reading it directly is cheaper than
/// `Instant::now()` and its arithmetic: Linux's `CLOCK_MONOTONIC` (through libc, whose
/// vDSO call valgrind can follow). `None` elsewhere.
#[inline]
pub(crate) fn monotonic_ns() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
        // Linux, so the call cannot fail (and `t` stays zero if it did).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        // Both fields are non-negative for the monotonic clock.
        Some(
            (t.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(t.tv_nsec as u64),
        )
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Bytes the peer sent that the application has not read yet (`FIONREAD`).
pub(crate) fn unread_bytes(socket: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::io::ioctl_fionread(socket)?)
}

/// The most [`discard_unread`] reads in one call: a socket's receive buffer, at most.
const DISCARD_LIMIT: usize = 8 << 20;

/// Reads and throws away whatever the peer has sent and nobody will read, without
/// blocking. Closing a TCP socket with unread data makes Linux send RST instead of FIN,
/// and the RST also drops everything we had queued for the peer; discarding first keeps
/// the close graceful. Returns how many bytes were discarded.
pub(crate) fn discard_unread(socket: BorrowedFd<'_>) -> io::Result<usize> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut total = 0;
    while total < DISCARD_LIMIT {
        match rustix::net::recv(socket, &mut buf[..], rustix::net::RecvFlags::DONTWAIT) {
            Ok((_, 0)) => break,
            Ok((_, n)) => total += n,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// Why `accept` failed, and what the accept loop should do about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// This one connection failed (aborted, reset, refused by a firewall …): skip it.
    PerConnection,
    /// Out of descriptors or memory: back off.
    Resources,
    /// The listener itself is broken: report it.
    Fatal,
}

impl AcceptError {
    /// Classifies an `accept` error by its errno (the table is per OS: not every system
    /// has every errno), or by its kind when there is none.
    pub(crate) fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Self::Resources,
            Some(
                libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPERM
                | libc::EPROTO
                | libc::EINTR
                | libc::EAGAIN
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::EHOSTDOWN
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP,
            ) => Self::PerConnection,
            // Linux's `accept(2)` passes on pending network errors, ENONET among them;
            // the BSDs and macOS have no ENONET.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(libc::ENONET) => Self::PerConnection,
            Some(_) => Self::Fatal,
            None => match e.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => Self::PerConnection,
                io::ErrorKind::OutOfMemory => Self::Resources,
                _ => Self::Fatal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(AcceptError::of(&os(libc::EMFILE)), AcceptError::Resources);
        assert_eq!(AcceptError::of(&os(libc::ENFILE)), AcceptError::Resources);
        assert_eq!(AcceptError::of(&os(libc::ENOBUFS)), AcceptError::Resources);
        assert_eq!(AcceptError::of(&os(libc::ENOMEM)), AcceptError::Resources);
        assert_eq!(
            AcceptError::of(&os(libc::ECONNABORTED)),
            AcceptError::PerConnection
        );
        assert_eq!(
            AcceptError::of(&os(libc::EPERM)),
            AcceptError::PerConnection
        );
        assert_eq!(AcceptError::of(&os(libc::EBADF)), AcceptError::Fatal);
        assert_eq!(AcceptError::of(&os(libc::EINVAL)), AcceptError::Fatal);
    }
}
