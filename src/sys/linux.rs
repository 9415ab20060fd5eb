//! Linux: the supervisor's events (an `EPOLLRDHUP` epoll and a timerfd), `TCP_INFO`,
//! `TCP_LINGER2`, and disconnect without closing.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Event, Probe};
use crate::config::Keepalive;
use crate::tcp_info::{KernelState, TcpInfo};

/// Whether the supervisor must sweep connections itself to find peer FINs.
pub(crate) const NEEDS_SWEEP: bool = false;

/// Whether an accepted socket starts with the listening socket's options (keepalive and its
/// timings, `TCP_USER_TIMEOUT`, `TCP_NODELAY`, `SO_LINGER`): Linux makes it as a copy of
/// the listener's socket.
pub(crate) const ACCEPT_INHERITS_OPTIONS: bool = true;

/// Whether `TCP_INFO` is there: the kernel's byte counts and timestamps.
pub(crate) const HAS_TCP_INFO: bool = true;

/// The key of the supervisor's own timer in the epoll (connection keys are a generation
/// in the high half and a slot in the low half, and no slot is `u32::MAX`).
const TIMER: u64 = u64::MAX;

const BATCH: usize = 256;

/// The supervisor's events: a second epoll instance in which every supervised socket is
/// registered for `EPOLLRDHUP` only, edge-triggered, so that data arriving never wakes it
/// while a FIN, a reset or a kernel timeout does; and the supervisor's one deadline, a
/// timerfd in the same epoll. The epoll descriptor itself sits in tokio's reactor.
///
/// Keeping the timer out of tokio's timer wheel means a server with pending deadlines
/// pays nothing for them each time its runtime parks (measured: ~0.3 µs per park, +3–5 %
/// on a loopback ping-pong, with a tokio `Sleep` pending).
#[derive(Debug)]
pub(crate) struct Events {
    epoll: AsyncFd<OwnedFd>,
    timer: OwnedFd,
}

impl Events {
    pub(crate) fn new() -> io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        epoll::add(
            &epoll,
            &timer,
            epoll::EventData::new_u64(TIMER),
            epoll::EventFlags::IN,
        )?;
        // SAFETY: the epoll descriptor is ours alone and lives inside the `AsyncFd` until
        // it is dropped (which deregisters it first); `OwnedFd::as_raw_fd` never changes.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE)? };
        Ok(Self { epoll, timer })
    }

    /// Arms the timer to fire once at `at` (at once if it is past), or disarms it.
    /// Never fires early: the timer is relative to a clock read after `at` was computed.
    pub(crate) fn set_timer(&self, at: Option<Instant>) -> io::Result<()> {
        let value = match at {
            // A zero it_value disarms, so "now" is one nanosecond.
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1)),
            None => Duration::ZERO,
        };
        let spec = Itimerspec {
            it_interval: Timespec::default(),
            it_value: Timespec {
                tv_sec: value.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: value.subsec_nanos().into(),
            },
        };
        timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Watches `socket` for the peer's FIN (and errors), reporting it under `key`.
    pub(crate) fn register(&self, socket: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        epoll::add(
            self.epoll.get_ref(),
            socket,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::RDHUP | epoll::EventFlags::ET,
        )?;
        Ok(())
    }

    /// Waits until at least one event is ready and appends the ready events to `out`.
    ///
    /// Cancellation safe: events are only taken from the kernel inside a synchronous call.
    pub(crate) async fn next_batch(&self, out: &mut Vec<Event>) -> io::Result<()> {
        loop {
            let mut guard = self.epoll.readable().await?;
            match guard.try_io(|epoll| self.take(epoll.get_ref(), out)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    fn take(&self, epoll: &OwnedFd, out: &mut Vec<Event>) -> io::Result<()> {
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); BATCH];
        let zero = Timespec::default();
        let (ready, _) = match epoll::wait(epoll, &mut events[..], Some(&zero)) {
            Ok(result) => result,
            Err(rustix::io::Errno::INTR) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(e.into()),
        };
        if ready.is_empty() {
            // Tells `try_io` to clear tokio's readiness so the next wait parks.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for event in ready.iter() {
            let (flags, key) = (event.flags, event.data.u64());
            if key == TIMER {
                // Already read (EAGAIN) is harmless.
                let _ = rustix::io::read(&self.timer, &mut [0u8; 8]);
                out.push(Event::Timer);
            } else {
                out.push(Event::Socket {
                    key,
                    hangup: flags.contains(epoll::EventFlags::HUP),
                    error: flags.contains(epoll::EventFlags::ERR),
                });
            }
        }
        Ok(())
    }
}

/// `getsockopt(TCP_INFO)`: no side effects, ~0.75 µs. Older kernels fill a prefix of
/// the struct; the rest reads as zero.
pub(crate) fn tcp_info(socket: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `tcp_info` is plain old data, for which all zeroes is a valid value; the
    // kernel writes at most `len` bytes into it and updates `len`.
    let (rc, raw) = unsafe {
        let mut raw: libc::tcp_info = mem::zeroed();
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc, raw)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpInfo {
        state: KernelState::from_linux(raw.tcpi_state),
        retransmits: raw.tcpi_retransmits,
        probes: raw.tcpi_probes,
        backoff: raw.tcpi_backoff,
        rtt_us: raw.tcpi_rtt,
        unacked: raw.tcpi_unacked,
        total_retrans: raw.tcpi_total_retrans,
        bytes_acked: raw.tcpi_bytes_acked,
        bytes_received: raw.tcpi_bytes_received,
        notsent_bytes: raw.tcpi_notsent_bytes,
        last_data_recv_ms: raw.tcpi_last_data_recv,
        last_data_sent_ms: raw.tcpi_last_data_sent,
        last_ack_recv_ms: raw.tcpi_last_ack_recv,
    })
}

/// `connect(AF_UNSPEC)`: resets the connection (RST to the peer, socket to CLOSED) without
/// closing the descriptor, so the application's next read fails with `ECONNRESET`.
pub(crate) fn disconnect(socket: BorrowedFd<'_>) -> io::Result<()> {
    rustix::net::connect_unspec(socket)?;
    Ok(())
}

/// Where a socket the watcher does not cover stands, from `TCP_INFO` (no side effects).
pub(crate) fn probe(socket: BorrowedFd<'_>) -> Probe {
    match tcp_info(socket) {
        Ok(info) if info.state == KernelState::Close => Probe::Ended(None),
        Ok(info) if info.state.peer_fin_received() => Probe::PeerFin,
        _ => Probe::Open,
    }
}

/// How long the socket may stay in `FIN_WAIT_2` once its descriptor is closed
/// (`TCP_LINGER2`, whole seconds, rounded up). The kernel caps it at 120 s and never goes
/// below 3.5 retransmission timeouts.
pub(crate) fn set_orphan_fin_wait(socket: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let secs = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0))
        .clamp(1, 120) as libc::c_int;
    // SAFETY: `secs` is a valid c_int that lives for the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_LINGER2,
            (&secs as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TCP_USER_TIMEOUT`.
pub(crate) fn set_user_timeout(socket: &socket2::SockRef<'_>, timeout: Duration) -> io::Result<()> {
    socket.set_tcp_user_timeout(Some(timeout))
}

/// Keepalive idle, interval and count (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`).
pub(crate) fn keepalive(ka: &Keepalive) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(ka.idle())
        .with_interval(ka.interval())
        .with_retries(ka.retries())
}
