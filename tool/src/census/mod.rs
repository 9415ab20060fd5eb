//! The census: one reading of the kernel's socket tables, grouped by side: the server
//! side by listening port, the client side by remote endpoint. The crate docs say where
//! it reads them and how it dates each pile.

mod diagnosis;
mod document;
mod metrics;
#[cfg(target_os = "linux")]
mod netns;
mod owners;
mod port;
mod procfs;
mod reap;
#[cfg(target_os = "linux")]
mod sock_diag;
mod socket;
mod track;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use serde::Serialize;

pub use metrics::MAX_PORTS_PER_SIDE;
pub use owners::Process;
pub use port::{
    Lingering, ListenQueue, PortCensus, ProcessSockets, Side, AGE_FLOOR, TIME_WAIT_FLOOR,
};
pub use procfs::SockStat;
pub use reap::{reap, reap_tracked, ReapFilter, ReapOutcome, ReapReport, Victim};
pub use track::AgeTracker;

use tcp_hygiene::KernelState;

use owners::Owners;
use port::STATE_ORDER;
use procfs::ListenCounters;
use socket::SocketRecord;

/// Where a census read the kernel's socket tables. Serialized as its
/// [`as_str`](Self::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// Netlink sock_diag (`inet_diag`), with `tcp_info`.
    SockDiag,
    /// `/proc/net/tcp` and `/proc/net/tcp6`.
    Procfs,
}

impl Source {
    /// `"sock_diag"` or `"procfs"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::SockDiag => "sock_diag",
            Source::Procfs => "procfs",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a census counts, and where. [`Census::of_local_port`] and [`Census::host`] are
/// its two common uses; the setters choose the rest. [`run`](Self::run) takes `&self`,
/// so one query can be run again and again (as `census --watch` does).
///
/// # Examples
///
/// ```no_run
/// use tcp_hygiene_cli::{CensusQuery, KernelState};
///
/// let census = CensusQuery::new().port(8080).netns("blue".to_owned()).run()?;
/// println!("{} CLOSE_WAIT", census.count(KernelState::CloseWait));
/// for line in census.diagnosis() {
///     println!("{line}");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CensusQuery {
    port: Option<u16>,
    owners: bool,
    netns: Option<String>,
    source: Option<Source>,
}

impl Default for CensusQuery {
    fn default() -> Self {
        Self::new()
    }
}

impl CensusQuery {
    /// Every port, owners looked up, in the caller's network namespace, from sock_diag
    /// with the `/proc` fallback.
    pub fn new() -> Self {
        CensusQuery {
            port: None,
            owners: true,
            netns: None,
            source: None,
        }
    }

    /// Only sockets whose local port is `port`. Pass `None` for every port (the
    /// default).
    pub fn port(mut self, port: impl Into<Option<u16>>) -> Self {
        self.port = port.into();
        self
    }

    /// Whether to find the processes holding each socket (by reading every
    /// `/proc/PID/fd`, like `ss -p`). Default is `true`; turn it off for a cheap census
    /// polled often. Processes whose descriptors cannot be read count as "owner unknown",
    /// never as an error.
    pub fn owners(mut self, owners: bool) -> Self {
        self.owners = owners;
        self
    }

    /// Count inside network namespace `netns`: a name from `ip netns add`
    /// (`/var/run/netns/NAME`) or a path such as `/proc/PID/ns/net`. Entering it needs
    /// `CAP_SYS_ADMIN`. Pass `None` for the caller's own namespace (the default).
    pub fn netns(mut self, netns: impl Into<Option<String>>) -> Self {
        self.netns = netns.into();
        self
    }

    /// Read the socket tables from `source` only, with no fallback. Pass `None` for
    /// sock_diag with the `/proc` fallback (the default).
    pub fn source(mut self, source: impl Into<Option<Source>>) -> Self {
        self.source = source.into();
        self
    }

    /// Takes the census.
    ///
    /// # Errors
    ///
    /// Not Linux ([`io::ErrorKind::Unsupported`]); the namespace cannot be entered;
    /// neither source can be read (or the chosen one, with [`source`](Self::source)).
    pub fn run(&self) -> io::Result<Census> {
        self.run_tracked(&mut AgeTracker::new())
    }

    /// Takes the census, dating each socket also by what `tracker` saw of it in the
    /// censuses it took part in before (see [`AgeTracker`]), and updates `tracker`. What
    /// `census --watch` and the exporter do.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_tracked(&self, tracker: &mut AgeTracker) -> io::Result<Census> {
        if !cfg!(target_os = "linux") {
            return Err(unsupported());
        }
        match &self.netns {
            None => self.run_here(tracker),
            #[cfg(target_os = "linux")]
            Some(name) => {
                let query = self.clone();
                let mut moved = std::mem::take(tracker);
                let (census, moved) = netns::run_in(name, move || {
                    let census = query.run_here(&mut moved)?;
                    Ok((census, moved))
                })?;
                *tracker = moved;
                Ok(census)
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => Err(unsupported()),
        }
    }

    fn run_here(&self, tracker: &mut AgeTracker) -> io::Result<Census> {
        let mut tables = read_tables(self.port, self.source)?;
        tracker.refine(&mut tables.sockets, std::time::Instant::now());
        let owners = self.owners.then(|| {
            let inodes: HashSet<u64> = tables
                .sockets
                .iter()
                .map(|s| s.inode)
                .filter(|inode| *inode != 0)
                .collect();
            Owners::scan(&inodes)
        });
        let mut census =
            Census::build(&tables.sockets, owners.as_ref(), &procfs::ephemeral_ports());
        census.source = Some(tables.source);
        census.fallback_reason = tables.fallback_reason;
        census.listen_counters = procfs::listen_counters();
        census.netns = self.netns.clone();
        Ok(census)
    }
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the census and the reaper read Linux's socket tables (sock_diag, /proc/net/tcp): Linux only",
    )
}

/// The sockets of one reading of the kernel's tables, and where they came from.
struct Tables {
    sockets: Vec<SocketRecord>,
    source: Source,
    fallback_reason: Option<String>,
}

/// Reads the socket tables of this thread's namespace: sock_diag, or `/proc` if
/// sock_diag fails and the caller did not insist on it.
fn read_tables(port: Option<u16>, preference: Option<Source>) -> io::Result<Tables> {
    let fin_timeout = procfs::fin_timeout();
    let mut fallback_reason = None;
    if preference != Some(Source::Procfs) {
        #[cfg(target_os = "linux")]
        let diag = sock_diag::DiagSocket::open().and_then(|mut s| s.dump(port, None, fin_timeout));
        #[cfg(not(target_os = "linux"))]
        let diag: io::Result<Vec<SocketRecord>> = Err(unsupported());
        match diag {
            Ok(sockets) => {
                return Ok(Tables {
                    sockets,
                    source: Source::SockDiag,
                    fallback_reason: None,
                })
            }
            Err(e) if preference == Some(Source::SockDiag) => return Err(e),
            Err(e) => fallback_reason = Some(format!("sock_diag: {e}")),
        }
    }
    Ok(Tables {
        sockets: procfs::dump(port, fin_timeout)?,
        source: Source::Procfs,
        fallback_reason,
    })
}

/// TCP sockets by state, as the kernel reports them, in groups: the server side by local
/// listening port ([`ports`](Self::ports)), the client side by remote endpoint
/// ([`remotes`](Self::remotes)); with orphans, owners, lingering times, accept queues and
/// a diagnosis worded for each side.
///
/// # Examples
///
/// ```no_run
/// use tcp_hygiene_cli::{Census, KernelState};
///
/// let census = Census::of_local_port(8080)?;
/// if census.count(KernelState::CloseWait) > 100 {
///     for line in census.diagnosis() {
///         eprintln!("{line}");
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Serialization
///
/// A census is [`Serialize`]; `tcp-hygiene census --json` prints it with serde_json:
///
/// ```text
/// {"totals":{"sockets":4012,"states":{"LISTEN":1,"ESTABLISHED":20,"CLOSE_WAIT":55,…},"orphans":0},
///  "ports":[{"port":8080,
///            "states":{"LISTEN":1,"CLOSE_WAIT":15},
///            "orphans":0,
///            "processes":[{"pid":4242,"command":"java"}],
///            "by_process":[{"pid":4242,"command":"java","sockets":16,"states":{"LISTEN":1,"CLOSE_WAIT":15}}],
///            "diagnosis":["CLOSE_WAIT: 15 on port 8080, lingered …"],
///            "owner_unknown":0,
///            "awaiting_accept":0,
///            "lingered_ms":{"CLOSE_WAIT":{"sockets":15,"at_least":0,"over_floor":15,
///                                         "newest":812,"median":5914,"oldest":6120}},
///            "listen":{"listeners":1,"accept_queue":0,"backlog":128,"full":false}}],
///  "remotes":[{"remote":"10.0.0.5:5432",
///              "states":{"ESTABLISHED":3,"CLOSE_WAIT":40},
///              "orphans":0, "processes":[…], "by_process":[…], "diagnosis":[…],
///              "owner_unknown":0, "lingered_ms":{…}}],
///  "source":"sock_diag","fallback_reason":null,"netns":null,
///  "listen_overflows":0,"listen_drops":0,
///  "diagnosis":[]}
/// ```
///
/// States use the kernel's names, upper case with underscores (`ESTABLISHED`,
/// `SYN_SENT`, `SYN_RECV`, `FIN_WAIT_1`, `FIN_WAIT_2`, `TIME_WAIT`, `CLOSE_WAIT`,
/// `LAST_ACK`, `LISTEN`, `CLOSING`), only those with sockets, in the census's order.
/// `listen` is `null` on a port without listeners, `backlog` `null` from `/proc`. The
/// top-level `diagnosis` holds the namespace-wide lines; each group holds its own.
/// `ports` and `remotes` are in ascending order, every group (the text output's `--top`
/// does not apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    ports: BTreeMap<u16, PortCensus>,
    remotes: BTreeMap<SocketAddr, PortCensus>,
    source: Option<Source>,
    fallback_reason: Option<String>,
    listen_counters: Option<ListenCounters>,
    netns: Option<String>,
}

impl Census {
    /// Groups `sockets` by side: the server side by local port, the client side by
    /// remote endpoint (see [`Side`]). `owners` is `None` when owners were not looked up;
    /// `ephemeral` is the namespace's `ip_local_port_range`.
    fn build(
        sockets: &[SocketRecord],
        owners: Option<&Owners>,
        ephemeral: &RangeInclusive<u16>,
    ) -> Census {
        let listening: HashSet<u16> = sockets
            .iter()
            .filter(|s| s.state == KernelState::Listen)
            .map(|s| s.local.port())
            .collect();
        let mut by_port: BTreeMap<u16, Vec<&SocketRecord>> = BTreeMap::new();
        let mut by_remote: BTreeMap<SocketAddr, Vec<&SocketRecord>> = BTreeMap::new();
        for socket in sockets {
            let port = socket.local.port();
            if listening.contains(&port) || !ephemeral.contains(&port) {
                by_port.entry(port).or_default().push(socket);
            } else {
                by_remote.entry(socket.peer).or_default().push(socket);
            }
        }
        Census {
            ports: by_port
                .into_iter()
                .map(|(port, sockets)| {
                    let group = PortCensus::build(Side::Server, port, None, &sockets, owners);
                    (port, group)
                })
                .collect(),
            remotes: by_remote
                .into_iter()
                .map(|(remote, sockets)| {
                    let group = PortCensus::build(
                        Side::Client,
                        remote.port(),
                        Some(remote),
                        &sockets,
                        owners,
                    );
                    (remote, group)
                })
                .collect(),
            ..Census::default()
        }
    }

    /// The sockets whose local port is `port` (IPv4 and IPv6, listening sockets
    /// included), with owners: `CensusQuery::new().port(port).run()`.
    ///
    /// # Errors
    ///
    /// See [`CensusQuery::run`].
    pub fn of_local_port(port: u16) -> io::Result<Self> {
        CensusQuery::new().port(port).run()
    }

    /// Every TCP socket of the caller's network namespace, with owners:
    /// `CensusQuery::new().run()`.
    ///
    /// # Errors
    ///
    /// See [`CensusQuery::run`].
    pub fn host() -> io::Result<Self> {
        CensusQuery::new().run()
    }

    /// Every group, both sides.
    fn all(&self) -> impl Iterator<Item = &PortCensus> {
        self.ports.values().chain(self.remotes.values())
    }

    /// Sockets in `state`, over every group counted.
    pub fn count(&self, state: KernelState) -> u64 {
        self.all().map(|p| p.count(state)).sum()
    }

    /// Connections counted, over every group; listening sockets are left out.
    pub fn total(&self) -> u64 {
        self.all().map(PortCensus::total).sum()
    }

    /// Every socket counted, listeners included.
    pub fn sockets(&self) -> u64 {
        self.all().map(PortCensus::sockets).sum()
    }

    /// Every state with at least one socket, with the count, in the census's order.
    pub fn states(&self) -> impl Iterator<Item = (KernelState, u64)> + '_ {
        STATE_ORDER
            .into_iter()
            .map(|state| (state, self.count(state)))
            .filter(|(_, n)| *n > 0)
    }

    /// Orphans over every group (see [`PortCensus::orphans`]).
    pub fn orphans(&self) -> u64 {
        self.all().map(PortCensus::orphans).sum()
    }

    /// The server side: each local port where this host accepts connections (or
    /// listens), in ascending order.
    pub fn ports(&self) -> impl Iterator<Item = &PortCensus> {
        self.ports.values()
    }

    /// Local port `port` on the server side, if it has sockets.
    pub fn port(&self, port: u16) -> Option<&PortCensus> {
        self.ports.get(&port)
    }

    /// The client side: each remote endpoint this host has connections to, in ascending
    /// order.
    pub fn remotes(&self) -> impl Iterator<Item = &PortCensus> {
        self.remotes.values()
    }

    /// The connections to `remote` on the client side, if any.
    pub fn remote(&self, remote: SocketAddr) -> Option<&PortCensus> {
        self.remotes.get(&remote)
    }

    /// Every group of both sides, the biggest first (ties: servers first, then by port
    /// or endpoint).
    pub fn groups(&self) -> Vec<&PortCensus> {
        let mut groups: Vec<&PortCensus> = self.all().collect();
        groups.sort_by_key(|g| {
            (
                std::cmp::Reverse(g.sockets()),
                g.side(),
                g.port(),
                g.remote(),
            )
        });
        groups
    }

    /// Every group's diagnosis lines (see [`PortCensus::diagnosis`]), then the
    /// namespace's: `ListenOverflows` if accept queues have overflowed.
    pub fn diagnosis(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.all().flat_map(PortCensus::diagnosis).collect();
        lines.extend(self.host_diagnosis());
        lines
    }

    /// The namespace-wide diagnosis lines only.
    pub fn host_diagnosis(&self) -> Vec<String> {
        diagnosis::host_lines(self.listen_counters, self.netns.is_some())
    }

    /// `ListenOverflows` of the namespace (`/proc/net/netstat`, since boot for the host's
    /// own namespace, since its creation for another): handshakes dropped because an
    /// accept queue was full.
    /// `None` if unreadable.
    pub fn listen_overflows(&self) -> Option<u64> {
        self.listen_counters.map(|c| c.overflows)
    }

    /// `ListenDrops` of the namespace: every drop at a listener, overflows included.
    pub fn listen_drops(&self) -> Option<u64> {
        self.listen_counters.map(|c| c.drops)
    }

    /// Where the socket tables were read; `None` for a census not read from the kernel
    /// ([`Census::default`]).
    pub fn source(&self) -> Option<Source> {
        self.source
    }

    /// Why sock_diag was not used, when the census fell back to `/proc`.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The network namespace counted, if not the caller's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

impl fmt::Display for Census {
    /// `STATE=n` for every state present, in the census's order (`none` if empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for state in STATE_ORDER {
            let n = self.count(state);
            if n > 0 {
                if any {
                    f.write_str(" ")?;
                }
                any = true;
                write!(f, "{state}={n}")?;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
