//! One group of a census — a server's listening port, or the remote endpoint a client
//! connects to — with its counts by state, orphans, owners, how long each pile has
//! lingered, and the accept queue of its listeners.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tcp_hygiene::KernelState;

use super::owners::{Owners, Process};
use super::socket::SocketRecord;

/// The states in the order a census shows them: listening, opening, open, then the
/// passive close (the peer closed first) and the active close (we did).
pub(crate) const STATE_ORDER: [KernelState; 13] = {
    use KernelState::*;
    [
        Listen,
        SynSent,
        SynRecv,
        Established,
        CloseWait,
        LastAck,
        FinWait1,
        FinWait2,
        Closing,
        TimeWait,
        Close,
        NewSynRecv,
        Unknown,
    ]
};

/// `state`'s position in [`STATE_ORDER`].
fn slot(state: KernelState) -> usize {
    use KernelState::*;
    match state {
        Listen => 0,
        SynSent => 1,
        SynRecv => 2,
        Established => 3,
        CloseWait => 4,
        LastAck => 5,
        FinWait1 => 6,
        FinWait2 => 7,
        Closing => 8,
        TimeWait => 9,
        Close => 10,
        NewSynRecv => 11,
        // Unknown, and any state the library's `KernelState` gains later.
        _ => 12,
    }
}

/// How long the sockets of one pile (a group and a state) have been in that state.
///
/// Read from the kernel's timestamps (the crate docs say which one each state uses);
/// sockets whose age the source cannot tell are not counted here. Where the kernel keeps
/// no timestamp that dates the state, an age is a lower bound ("at least"), counted in
/// [`at_least`](Self::at_least). Serialized with the durations in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Lingering {
    /// Sockets whose age is known (exactly or as a lower bound).
    pub sockets: u64,
    /// Of those, the ones whose age is only a lower bound: the socket has been in its
    /// state at least that long.
    pub at_least: u64,
    /// Sockets that have lingered longer than the diagnosis's age floor,
    /// [`AGE_FLOOR`](crate::AGE_FLOOR) (1 s), or may have: an age that is a lower bound
    /// under it counts when the kernel's upper bound (the last data before the state)
    /// is over it.
    pub over_floor: u64,
    /// The youngest.
    #[serde(serialize_with = "millis")]
    pub newest: Duration,
    /// The median (the upper one of an even count).
    #[serde(serialize_with = "millis")]
    pub median: Duration,
    /// The oldest.
    #[serde(serialize_with = "millis")]
    pub oldest: Duration,
}

/// A duration as whole milliseconds (a `u64`: 584 million years), for [`Lingering`].
fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

impl Lingering {
    /// From each socket's age, whether it is a lower bound, and its upper bound if known.
    fn of(mut ages: Vec<(Duration, bool, Option<Duration>)>) -> Option<Lingering> {
        ages.sort_unstable();
        let at_least = ages.iter().filter(|(_, lower, _)| *lower).count() as u64;
        let over_floor = ages
            .iter()
            .filter(|(age, lower, upper)| {
                *age > AGE_FLOOR || (*lower && upper.is_some_and(|u| u > AGE_FLOOR))
            })
            .count() as u64;
        let ages: Vec<Duration> = ages.into_iter().map(|(age, _, _)| age).collect();
        Some(Lingering {
            sockets: ages.len() as u64,
            at_least,
            over_floor,
            newest: *ages.first()?,
            median: ages[ages.len() / 2],
            oldest: *ages.last()?,
        })
    }
}

/// The accept queue of a port's listening sockets (summed over them: IPv4 and IPv6, or
/// `SO_REUSEPORT` groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ListenQueue {
    /// Listening sockets on the port.
    pub listeners: u32,
    /// Connections whose handshake completed, waiting for `accept()`.
    pub accept_queue: u32,
    /// The most the queues hold (`listen()`'s backlog, capped by `net.core.somaxconn`);
    /// `None` from `/proc/net/tcp`, which does not show it.
    pub backlog: Option<u32>,
    /// Whether a listener's queue is over its backlog: the kernel now drops new
    /// handshakes (`ListenOverflows`).
    pub full: bool,
}

/// The diagnosis's age floor: a pile is diagnosed only if some of its sockets have
/// lingered longer than this (1 s), so that the churn of a busy host (connections that
/// pass through `CLOSE_WAIT` or `FIN_WAIT_2` in a few milliseconds) stays quiet. A pile
/// whose age the source cannot tell (`/proc/net/tcp`) is diagnosed whatever its age.
pub const AGE_FLOOR: Duration = Duration::from_secs(1);

/// `TIME_WAIT` is diagnosed only in a group of at least this many (1,000): each lasts
/// 60 s by design and costs little; in thousands towards one remote endpoint they use up
/// the ephemeral ports.
pub const TIME_WAIT_FLOOR: u64 = 1_000;

/// Which end of their connections a group's sockets are.
///
/// A socket is on the server side when its local port has a listening socket in the
/// census, or, when none listens there any more, when its local port lies outside the
/// namespace's ephemeral range (`net.ipv4.ip_local_port_range`); otherwise it is a
/// connection this host opened, on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Side {
    /// Connections accepted on a local port (and its listeners): grouped by that port.
    Server,
    /// Connections this host opened: grouped by the remote endpoint (address and port).
    Client,
}

impl Side {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sockets of one group that one process holds, by state. A socket several processes
/// hold (forked workers sharing it) counts for each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessSockets {
    /// The process.
    pub process: Process,
    counts: [u64; STATE_ORDER.len()],
}

impl ProcessSockets {
    /// Sockets of the group this process holds.
    pub fn sockets(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Those in `state`.
    pub fn count(&self, state: KernelState) -> u64 {
        self.counts[slot(state)]
    }

    /// Every state in which it holds sockets, with the count, in the census's order.
    pub fn states(&self) -> impl Iterator<Item = (KernelState, u64)> + '_ {
        states_of(&self.counts)
    }
}

fn states_of(counts: &[u64; STATE_ORDER.len()]) -> impl Iterator<Item = (KernelState, u64)> + '_ {
    STATE_ORDER
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| (*state, *n))
}

/// Counts by state and the rest of a census for one group: a local port where this host
/// serves ([`Side::Server`]), or a remote endpoint it connects to ([`Side::Client`]).
/// The name stays from when every group was a local port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortCensus {
    port: u16,
    side: Side,
    remote: Option<SocketAddr>,
    counts: [u64; STATE_ORDER.len()],
    orphans_by_state: [u64; STATE_ORDER.len()],
    awaiting_by_state: [u64; STATE_ORDER.len()],
    processes: Vec<Process>,
    by_process: Vec<ProcessSockets>,
    owner_unknown: u64,
    lingering: Vec<(KernelState, Lingering)>,
    listen: Option<ListenQueue>,
}

impl PortCensus {
    /// The census of one group from its sockets: local port `port` on the server side,
    /// or `remote` on the client side. `owners` is `None` when owners were not looked up.
    pub(crate) fn build(
        side: Side,
        port: u16,
        remote: Option<SocketAddr>,
        sockets: &[&SocketRecord],
        owners: Option<&Owners>,
    ) -> Self {
        let mut census = PortCensus {
            port,
            side,
            remote,
            counts: [0; STATE_ORDER.len()],
            orphans_by_state: [0; STATE_ORDER.len()],
            awaiting_by_state: [0; STATE_ORDER.len()],
            processes: Vec::new(),
            by_process: Vec::new(),
            owner_unknown: 0,
            lingering: Vec::new(),
            listen: None,
        };
        let mut ages: Vec<Vec<(Duration, bool, Option<Duration>)>> =
            vec![Vec::new(); STATE_ORDER.len()];
        let mut inodes = HashSet::new();
        let mut by_process: BTreeMap<Process, [u64; STATE_ORDER.len()]> = BTreeMap::new();
        for s in sockets {
            let i = slot(s.state);
            census.counts[i] += 1;
            census.orphans_by_state[i] += u64::from(s.is_orphan());
            census.awaiting_by_state[i] += u64::from(s.awaits_accept());
            if let Some(age) = s.lingered {
                ages[i].push((age, s.lower_bound, s.upper_bound));
            }
            if s.inode != 0 {
                inodes.insert(s.inode);
                census.owner_unknown += u64::from(!owners.is_some_and(|o| o.knows(s.inode)));
                for process in owners.into_iter().flat_map(|o| o.of(s.inode)) {
                    by_process.entry(process).or_insert([0; STATE_ORDER.len()])[i] += 1;
                }
            }
            if s.state == KernelState::Listen {
                let queue = census.listen.get_or_insert(ListenQueue {
                    listeners: 0,
                    accept_queue: 0,
                    backlog: Some(0),
                    full: false,
                });
                queue.listeners += 1;
                queue.accept_queue += s.recv_queue;
                queue.backlog = queue.backlog.zip(s.backlog).map(|(a, b)| a + b);
                queue.full |= s.backlog.is_some_and(|b| s.recv_queue > b);
            }
        }
        if let Some(owners) = owners {
            census.processes = owners.of_all(inodes);
        }
        census.by_process = by_process
            .into_iter()
            .map(|(process, counts)| ProcessSockets { process, counts })
            .collect();
        // The biggest holder first.
        census
            .by_process
            .sort_by_key(|p| (std::cmp::Reverse(p.sockets()), p.process.pid));
        census.lingering = STATE_ORDER
            .iter()
            .zip(ages)
            .filter_map(|(state, ages)| Some((*state, Lingering::of(ages)?)))
            .collect();
        census
    }

    /// The local port on the server side; the remote port on the client side.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Which end of their connections these sockets are.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The remote endpoint, on the client side; `None` on the server side.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Every socket of the group, listeners included.
    pub fn sockets(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// How many sockets each process holds, by state, the biggest holder first. Empty
    /// when owners were not looked up.
    pub fn by_process(&self) -> &[ProcessSockets] {
        &self.by_process
    }

    /// Sockets in `state` (`SYN_RECV` includes the kernel's `NEW_SYN_RECV` handshakes,
    /// as in `ss`).
    pub fn count(&self, state: KernelState) -> u64 {
        self.counts[slot(state)]
    }

    /// Every state with at least one socket, with its count, in the order the census
    /// shows them (listening, opening, open, passive close, active close).
    pub fn states(&self) -> impl Iterator<Item = (KernelState, u64)> + '_ {
        states_of(&self.counts)
    }

    /// Connections, listening sockets left out.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() - self.count(KernelState::Listen)
    }

    /// Orphans: sockets whose application has closed them and that the kernel still
    /// holds in `FIN_WAIT_1`, `FIN_WAIT_2`, `LAST_ACK` or `CLOSING`. Unlike
    /// `/proc/net/sockstat`'s `orphan` this includes orphaned `FIN_WAIT_2` sockets parked
    /// in time-wait slots.
    pub fn orphans(&self) -> u64 {
        self.orphans_by_state.iter().sum()
    }

    /// Orphans in `state`.
    pub fn orphans_in(&self, state: KernelState) -> u64 {
        self.orphans_by_state[slot(state)]
    }

    /// Connections whose handshake completed and that no process has accepted yet
    /// (`ESTABLISHED` or, if the client already gave up, `CLOSE_WAIT`, without a
    /// descriptor).
    pub fn awaiting_accept(&self) -> u64 {
        self.awaiting_by_state.iter().sum()
    }

    /// Connections in `state` waiting to be accepted.
    pub fn awaiting_accept_in(&self, state: KernelState) -> u64 {
        self.awaiting_by_state[slot(state)]
    }

    /// The processes holding sockets on this port, by pid. Empty when owners were not
    /// looked up.
    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// Sockets with a descriptor whose process was not found: another user's process
    /// read without root, a kernel socket, or owners not looked up.
    pub fn owner_unknown(&self) -> u64 {
        self.owner_unknown
    }

    /// How long the sockets in `state` have lingered; `None` if none has a known age.
    pub fn lingered(&self, state: KernelState) -> Option<Lingering> {
        self.lingering
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, l)| *l)
    }

    /// Every state whose age is known, with its [`Lingering`].
    pub fn lingering(&self) -> impl Iterator<Item = (KernelState, Lingering)> + '_ {
        self.lingering.iter().copied()
    }

    /// The accept queue of the port's listening sockets, if it has any.
    pub fn listen(&self) -> Option<ListenQueue> {
        self.listen
    }
}
