//! The host's own view of TCP sockets, for operators: counts by state in groups — the
//! server side by listening port, the client side by remote endpoint — with orphans,
//! owning processes, how long each pile has lingered, accept queues, and a diagnosis of
//! every unusual pile — what `ss -tan` shows, and what it leaves to the
//! operator to work out — and a reaper for the sockets that linger.
//!
//! It sees every socket, whichever process or library owns it, so it tells a leak that
//! the `tcp-hygiene` library does not manage (a plain tokio listener, a Java service) from
//! one it does. [`reap`] destroys lingering sockets of any process (`SOCK_DESTROY`, what
//! `ss -K` uses). The crate's binary, `tcp-hygiene`, is both as commands (`census`,
//! `reap`, `exporter`); its README shows them at work.
//!
//! # Examples
//!
//! ```no_run
//! use tcp_hygiene_cli::{Census, KernelState};
//!
//! let census = Census::of_local_port(8080)?;
//! if census.count(KernelState::CloseWait) > 100 {
//!     for line in census.diagnosis() {
//!         eprintln!("{line}");
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Sources
//!
//! Netlink sock_diag (`inet_diag`, what `ss` uses): the kernel hands over only the
//! requested port's sockets, with their `tcp_info`, so a census of one port on a host with
//! tens of thousands of sockets costs little. If sock_diag is unavailable (no
//! `inet_diag` module, a sandbox without netlink) the census falls back to
//! `/proc/net/tcp` and `/proc/net/tcp6`, which have no `tcp_info`: only `TIME_WAIT` and
//! handshakes then get an age, and listeners no backlog. [`Census::source`] says which
//! was used.
//!
//! # How long a pile has lingered
//!
//! The kernel keeps no "entered this state at", so the age comes from what it keeps, and
//! is never more than the time the socket has spent in its state; where the kernel only
//! bounds it from below the census says "at least" ([`Lingering::at_least`]):
//!
//! - `CLOSE_WAIT` and `FIN_WAIT_2` from `tcpi_last_ack_recv` (the peer's FIN, or the ACK
//!   of ours, was the last thing it sent; `tcpi_last_data_recv` would count from its last
//!   data). A keepalive reply, or the ACK of data sent since, is a later ACK: with a
//!   keepalive or retransmission timer running the age is "at least".
//! - `FIN_WAIT_1` and `LAST_ACK` from our FIN's retransmissions (the timeouts passed and
//!   the current one's elapsed part): at least, and unknown when the FIN alone is not what
//!   is being retransmitted (no retransmission yet, data queued before the FIN, a
//!   zero-window probe). `CLOSING` at least since the peer's FIN. Neither
//!   `tcpi_last_ack_recv` nor `tcpi_last_data_sent`: both may predate the close.
//! - `ESTABLISHED` from the idle time; `TIME_WAIT` and orphaned `FIN_WAIT_2` from their
//!   timers; handshakes from their retransmissions (approximate).
//!
//! [`AgeTracker`] follows sockets by cookie from one census (or reap) to the next, so that
//! `census --watch`, the exporter and `reap --every` see an age grow with the time a
//! socket has been seen in its state, whatever keepalive does.
//!
//! # Groups and diagnosis
//!
//! A census groups the server side by local listening port and the client side (the
//! connections this host opened) by remote endpoint ([`Side`]), so that a client's
//! ephemeral ports never make a group each. A pile is diagnosed, in words for its side,
//! only when some of its sockets have lingered longer than [`AGE_FLOOR`] (1 s), or, for
//! `TIME_WAIT`, from [`TIME_WAIT_FLOOR`] sockets on: the churn of a busy host stays quiet.
//! [`Census::to_prometheus`] renders it for Prometheus (`tcp-hygiene exporter`).
//!
//! # Platform support
//!
//! Linux only. Elsewhere [`CensusQuery::run`] (and so [`Census::of_local_port`] and
//! [`Census::host`]) and [`reap`] return an error of kind
//! [`std::io::ErrorKind::Unsupported`], and the binary says so and exits 2.
//!
//! # Blocking
//!
//! A census reads kernel tables and `/proc` synchronously (about a millisecond for one
//! port; the owner lookup reads every process's descriptors). From async code, call it
//! inside `tokio::task::spawn_blocking` when that matters.
#![deny(unsafe_code)]

mod census;

pub use census::{
    reap, reap_tracked, AgeTracker, Census, CensusQuery, Lingering, ListenQueue, PortCensus,
    Process, ProcessSockets, ReapFilter, ReapOutcome, ReapReport, Side, SockStat, Source, Victim,
    AGE_FLOOR, MAX_PORTS_PER_SIDE, TIME_WAIT_FLOOR,
};
// The TCP states are the library's own.
pub use tcp_hygiene::KernelState;
