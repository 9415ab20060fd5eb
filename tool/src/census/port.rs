//! One local port's share of a census: counts by state, orphans, owners, how long each
//! pile has lingered, and the accept queue of its listeners.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tcp_hygiene::KernelState;

use super::diagnosis;
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

/// How long the sockets of one pile (a port and a state) have been in that state.
///
/// Read from the kernel's timestamps (see [`Census`](crate::Census) for which one each
/// state uses); sockets whose age the source cannot tell are not counted here. Serialized
/// with the durations in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Lingering {
    /// Sockets whose age is known.
    pub sockets: u64,
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
    fn of(mut ages: Vec<Duration>) -> Option<Lingering> {
        ages.sort_unstable();
        Some(Lingering {
            sockets: ages.len() as u64,
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

/// Counts by state and the rest of a census for one local port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortCensus {
    port: u16,
    counts: [u64; STATE_ORDER.len()],
    orphans_by_state: [u64; STATE_ORDER.len()],
    awaiting_by_state: [u64; STATE_ORDER.len()],
    processes: Vec<Process>,
    owner_unknown: u64,
    lingering: Vec<(KernelState, Lingering)>,
    listen: Option<ListenQueue>,
}

impl PortCensus {
    /// The census of `port` from its sockets. `owners` is `None` when owners were not
    /// looked up.
    pub(crate) fn build(port: u16, sockets: &[&SocketRecord], owners: Option<&Owners>) -> Self {
        let mut census = PortCensus {
            port,
            counts: [0; STATE_ORDER.len()],
            orphans_by_state: [0; STATE_ORDER.len()],
            awaiting_by_state: [0; STATE_ORDER.len()],
            processes: Vec::new(),
            owner_unknown: 0,
            lingering: Vec::new(),
            listen: None,
        };
        let mut ages: Vec<Vec<Duration>> = vec![Vec::new(); STATE_ORDER.len()];
        let mut inodes = HashSet::new();
        for s in sockets {
            let i = slot(s.state);
            census.counts[i] += 1;
            census.orphans_by_state[i] += u64::from(s.is_orphan());
            census.awaiting_by_state[i] += u64::from(s.awaits_accept());
            if let Some(age) = s.lingered {
                ages[i].push(age);
            }
            if s.inode != 0 {
                inodes.insert(s.inode);
                census.owner_unknown += u64::from(!owners.is_some_and(|o| o.knows(s.inode)));
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
        census.lingering = STATE_ORDER
            .iter()
            .zip(ages)
            .filter_map(|(state, ages)| Some((*state, Lingering::of(ages)?)))
            .collect();
        census
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sockets in `state` (`SYN_RECV` includes the kernel's `NEW_SYN_RECV` handshakes,
    /// as in `ss`).
    pub fn count(&self, state: KernelState) -> u64 {
        self.counts[slot(state)]
    }

    /// Every state with at least one socket, with its count, in the order the census
    /// shows them (listening, opening, open, passive close, active close).
    pub fn states(&self) -> impl Iterator<Item = (KernelState, u64)> + '_ {
        STATE_ORDER
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| (*state, n))
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

    /// One line for each unusual pile: every state other than `ESTABLISHED` and `LISTEN`
    /// with at least one socket, and a full accept queue. Each line starts with the
    /// state's name and says how long the pile has lingered, what it means in TCP terms,
    /// and what to do.
    pub fn diagnosis(&self) -> Vec<String> {
        diagnosis::port_lines(self)
    }
}
