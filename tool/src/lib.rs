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
//! `reap`); its README shows them at work.
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
//! The kernel keeps no "entered this state at", so the age comes from what it keeps:
//! `CLOSE_WAIT` and `FIN_WAIT_2` from `tcpi_last_ack_recv` (the peer's FIN, or the ACK
//! of ours, was the last thing it sent; `tcpi_last_data_recv` would count from its last
//! data); `FIN_WAIT_1`, `LAST_ACK` and `CLOSING` from the longer of `tcpi_last_ack_recv`
//! and `tcpi_last_data_sent` (a vanished peer sends no ACKs, a zero-window peer ACKs our
//! probes but takes no data); `ESTABLISHED` from the idle time; `TIME_WAIT` and orphaned
//! `FIN_WAIT_2` from their timers; handshakes from their retransmissions (approximate).
//! Any ACK counts as the peer being heard, keepalive replies included.
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
