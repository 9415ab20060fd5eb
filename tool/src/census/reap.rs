//! Destroying lingering sockets of any process: netlink `SOCK_DESTROY`, what `ss -K` uses,
//! with a notion of "lingering" that `ss` lacks. What the owner and the peer see
//! afterwards is documented on [`reap`], the public face of this module.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tcp_hygiene::KernelState;

use super::diagnosis::human;
use super::owners::Process;
use super::track::AgeTracker;

/// Which sockets [`reap`] destroys: those on local port `port` ([`new`](Self::new)) or
/// to remote port `port` ([`remote_port`](Self::remote_port)), in `state`, that have
/// lingered at least `min_idle`, optionally only those a given process holds.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use tcp_hygiene_cli::{reap, KernelState, ReapFilter};
///
/// let filter = ReapFilter::new(8080, Duration::from_secs(60))
///     .with_state(KernelState::FinWait2)
///     .with_limit(100)
///     .with_dry_run(true);
/// let report = reap(&filter)?;
/// for victim in &report.victims {
///     println!("{victim}");
/// }
/// println!("{report}");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ReapFilter {
    port: u16,
    remote: bool,
    pid: Option<u32>,
    min_idle: Duration,
    state: KernelState,
    dry_run: bool,
    limit: Option<usize>,
    netns: Option<String>,
}

impl ReapFilter {
    /// Sockets on local port `port` in `CLOSE_WAIT` that have lingered at least
    /// `min_idle`; no limit, not a dry run, the caller's network namespace.
    pub fn new(port: u16, min_idle: Duration) -> Self {
        ReapFilter {
            port,
            remote: false,
            pid: None,
            min_idle,
            state: KernelState::CloseWait,
            dry_run: false,
            limit: None,
            netns: None,
        }
    }

    /// Sockets this host opened to remote port `port` (any address), in `CLOSE_WAIT`,
    /// that have lingered at least `min_idle`: a client's pile, such as a connection pool
    /// that keeps connections its server closed. Otherwise as [`new`](Self::new).
    pub fn remote_port(port: u16, min_idle: Duration) -> Self {
        ReapFilter {
            remote: true,
            ..Self::new(port, min_idle)
        }
    }

    /// Only sockets process `pid` holds (a descriptor of its refers to them; orphans,
    /// which no process holds, are then left alone). Pass `None` for any process's and
    /// orphans (the default).
    pub fn with_pid(mut self, pid: impl Into<Option<u32>>) -> Self {
        self.pid = pid.into();
        self
    }

    /// The state to reap: `CloseWait` (the default), `FinWait2`, `LastAck` or `FinWait1`.
    /// [`reap`] refuses any other: `ESTABLISHED` and the handshake states are the
    /// application's business, `TIME_WAIT` ends by itself within 60 s.
    pub fn with_state(mut self, state: KernelState) -> Self {
        self.state = state;
        self
    }

    /// Report what would be destroyed, destroy nothing. Default is `false`.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Destroy at most `limit` sockets, the oldest first. Pass `None` for no limit (the
    /// default).
    pub fn with_limit(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.limit = limit.into();
        self
    }

    /// Reap inside network namespace `netns` (a name from `ip netns add` or a path such
    /// as `/proc/PID/ns/net`). Pass `None` for the caller's own (the default).
    pub fn with_netns(mut self, netns: impl Into<Option<String>>) -> Self {
        self.netns = netns.into();
        self
    }
}

/// What [`reap`] did to one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReapOutcome {
    /// Destroyed: the kernel freed the connection; the peer got a RST, unless the socket
    /// was an orphaned `FIN_WAIT_2` (see [`reap`]).
    Destroyed,
    /// A dry run: it would have been destroyed.
    WouldDestroy,
    /// Not touched: over the limit.
    OverLimit,
    /// Gone before it could be destroyed (`ENOENT`): its process closed it meanwhile.
    Gone,
    /// Another socket now has its addresses (`ESTALE`: the cookie did not match); that
    /// socket was left alone.
    Replaced,
    /// The kernel refused with another error.
    Failed(String),
}

impl ReapOutcome {
    /// A short name: `destroyed`, `would_destroy`, `over_limit`, `gone`, `replaced`,
    /// `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReapOutcome::Destroyed => "destroyed",
            ReapOutcome::WouldDestroy => "would_destroy",
            ReapOutcome::OverLimit => "over_limit",
            ReapOutcome::Gone => "gone",
            ReapOutcome::Replaced => "replaced",
            ReapOutcome::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for ReapOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReapOutcome::Destroyed => f.write_str("destroyed"),
            ReapOutcome::WouldDestroy => f.write_str("would destroy (dry run)"),
            ReapOutcome::OverLimit => f.write_str("left alone (over --limit)"),
            ReapOutcome::Gone => f.write_str("not destroyed: already gone (ENOENT)"),
            ReapOutcome::Replaced => {
                f.write_str("not destroyed: replaced by a newer socket (ESTALE)")
            }
            ReapOutcome::Failed(e) => write!(f, "not destroyed: {e}"),
        }
    }
}

/// A socket that matched a [`ReapFilter`], and what was done to it. Serialized as
/// `{"state":"CLOSE_WAIT","local":"IP:PORT","peer":"IP:PORT","owners":[…],"orphan":false,
/// "idle_ms":12340,"idle_at_least":false,"outcome":"destroyed","error":null}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Victim {
    /// Its state when dumped.
    pub state: KernelState,
    /// Its local address.
    pub local: SocketAddr,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The processes holding it; empty for an orphan or if unknown.
    pub owners: Vec<Process>,
    /// Whether no descriptor refers to it (its process closed it).
    pub orphan: bool,
    /// How long it had lingered in its state.
    pub idle: Duration,
    /// Whether `idle` is only a lower bound (see the crate docs on ages).
    pub idle_at_least: bool,
    /// What was done.
    pub outcome: ReapOutcome,
}

impl fmt::Display for Victim {
    /// `CLOSE_WAIT 127.0.0.1:8080 127.0.0.1:51234 owner 4242 python3 idle 12.3 s destroyed`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} owner ", self.state, self.local, self.peer)?;
        match (self.owners.is_empty(), self.orphan) {
            (true, true) => f.write_str("none (orphan)")?,
            (true, false) => f.write_str("unknown")?,
            (false, _) => {}
        }
        for (i, owner) in self.owners.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            write!(f, "{sep}{owner}")?;
        }
        let at_least = if self.idle_at_least { "at least " } else { "" };
        write!(f, " idle {at_least}{} {}", human(self.idle), self.outcome)
    }
}

impl Serialize for Victim {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Document<'a> {
            state: &'a str,
            local: String,
            peer: String,
            owners: &'a [Process],
            orphan: bool,
            idle_ms: u64,
            idle_at_least: bool,
            outcome: &'a str,
            error: Option<&'a str>,
        }
        Document {
            state: self.state.as_str(),
            local: self.local.to_string(),
            peer: self.peer.to_string(),
            owners: &self.owners,
            orphan: self.orphan,
            idle_ms: u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX),
            idle_at_least: self.idle_at_least,
            outcome: self.outcome.as_str(),
            error: match &self.outcome {
                ReapOutcome::Failed(e) => Some(e),
                _ => None,
            },
        }
        .serialize(serializer)
    }
}

/// What [`reap`] found and did. Serialized with its counts:
/// `{"matched":3,"reaped":1,"failed":0,"younger":5,"min_idle_ms":3000,"dry_run":false,
/// "victims":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapReport {
    /// The sockets that matched (port, state, lingered at least `min_idle`), oldest first.
    pub victims: Vec<Victim>,
    /// Sockets on the port in the state that had not lingered long enough.
    pub younger: u64,
    /// The threshold, for the summary.
    pub min_idle: Duration,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl ReapReport {
    /// Sockets destroyed.
    pub fn reaped(&self) -> usize {
        self.count(|o| *o == ReapOutcome::Destroyed)
    }

    /// Sockets that matched the filter.
    pub fn matched(&self) -> usize {
        self.victims.len()
    }

    /// Sockets the kernel refused to destroy for a reason other than being gone or
    /// replaced.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, ReapOutcome::Failed(_)))
    }

    fn count(&self, f: impl Fn(&ReapOutcome) -> bool) -> usize {
        self.victims.iter().filter(|v| f(&v.outcome)).count()
    }
}

impl Serialize for ReapReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Document<'a> {
            matched: usize,
            reaped: usize,
            failed: usize,
            younger: u64,
            min_idle_ms: u64,
            dry_run: bool,
            victims: &'a [Victim],
        }
        Document {
            matched: self.matched(),
            reaped: self.reaped(),
            failed: self.failed(),
            younger: self.younger,
            min_idle_ms: u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX),
            dry_run: self.dry_run,
            victims: &self.victims,
        }
        .serialize(serializer)
    }
}

impl fmt::Display for ReapReport {
    /// `reaped N of M`, then what else happened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reaped {} of {}", self.reaped(), self.matched())?;
        if self.dry_run {
            let would = self.count(|o| *o == ReapOutcome::WouldDestroy);
            write!(f, " (dry run: would destroy {would})")?;
        }
        let over = self.count(|o| *o == ReapOutcome::OverLimit);
        if over > 0 {
            write!(f, "; {over} over the limit left alone")?;
        }
        let gone = self.count(|o| matches!(o, ReapOutcome::Gone | ReapOutcome::Replaced));
        if gone > 0 {
            write!(f, "; {gone} gone or replaced meanwhile")?;
        }
        if self.failed() > 0 {
            write!(f, "; {} failed", self.failed())?;
        }
        if self.younger > 0 {
            write!(
                f,
                "; {} younger than {} left alone",
                self.younger,
                human(self.min_idle)
            )?;
        }
        Ok(())
    }
}

/// Destroys the sockets `filter` selects, whichever process holds them, oldest first,
/// each addressed by the socket cookie of the dump that found it (a socket that has
/// since been replaced by another with the same addresses is never hit). How long a
/// socket lingered is read as in the [`Census`](crate::Census); sockets whose age is
/// unknown are never reaped.
///
/// # What the owner and the peer see
///
/// `SOCK_DESTROY` frees the kernel's TCP state, not the owner's descriptor: the descriptor
/// stays open until the process closes it (measured on Linux 6.18, tested in
/// `tests/reap.rs`):
///
/// - the owner's reads return EOF (`Ok(0)`) for a socket that was in `CLOSE_WAIT` or
///   `LAST_ACK` (the peer's FIN had arrived); for one it held in `FIN_WAIT_1` or
///   `FIN_WAIT_2` (it had shut down writing and waited for the rest) they fail with
///   `ECONNABORTED`;
/// - its first write fails with `ECONNABORTED`, later ones with `EPIPE`;
/// - the peer receives a RST (its reads fail with `ECONNRESET`; one in `CLOSE_WAIT`,
///   which had read our FIN, leaves the state with `EPIPE` pending) — except from an
///   orphaned `FIN_WAIT_2` socket, parked in a time-wait slot, which goes without a
///   word: its peer stays in `CLOSE_WAIT` until its next write draws a RST;
/// - the socket leaves `ss` at once; the descriptor still counts against the process's
///   `RLIMIT_NOFILE` until closed.
///
/// A process that ignores EOF keeps its descriptors, but no longer the kernel's
/// connection, its buffers or the peer's resources.
///
/// # Errors
///
/// - [`io::ErrorKind::PermissionDenied`], "needs CAP_NET_ADMIN (run as root)": the
///   kernel refused to destroy (dumps and dry runs need no privilege);
/// - [`io::ErrorKind::Unsupported`], "this kernel lacks CONFIG_INET_DIAG_DESTROY", or not
///   Linux;
/// - [`io::ErrorKind::InvalidInput`] for a state other than the four reapable ones;
/// - the namespace cannot be entered, or sock_diag cannot be used (there is no `/proc`
///   fallback: destroying needs the socket cookies).
///
/// These stop the reap at the first socket; `ENOENT` and `ESTALE` are reported in the
/// victim's [`outcome`](Victim::outcome), not as errors.
///
/// The cookie names a socket, not its state: one whose owner closes it between the dump
/// and the destroy (a `CLOSE_WAIT` socket moving to `LAST_ACK`) is destroyed anyway,
/// which only ends a close the owner had begun.
pub fn reap(filter: &ReapFilter) -> io::Result<ReapReport> {
    reap_tracked(filter, &mut AgeTracker::new())
}

/// [`reap`], dating each socket also by what `tracker` saw of it in the reaps (or
/// censuses) it took part in before, and updating `tracker`: what `reap --every` does, so
/// that a `CLOSE_WAIT` socket whose age keepalive replies keep resetting is still reaped
/// once it has been seen in `CLOSE_WAIT` for `min_idle`. See [`AgeTracker`].
///
/// # Errors
///
/// As [`reap`].
pub fn reap_tracked(filter: &ReapFilter, tracker: &mut AgeTracker) -> io::Result<ReapReport> {
    use KernelState::*;
    if !matches!(filter.state, CloseWait | FinWait2 | LastAck | FinWait1) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot reap {}: only CLOSE_WAIT, FIN_WAIT_2, LAST_ACK and FIN_WAIT_1",
                filter.state
            ),
        ));
    }
    linux::reap(filter, tracker)
}

/// The kernel's refusals that hold for every socket, as the errors [`reap`] promises.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn fatal(error: &io::Error) -> Option<io::Error> {
    match error.raw_os_error()? {
        libc::EPERM | libc::EACCES => Some(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "needs CAP_NET_ADMIN (run as root)",
        )),
        libc::EOPNOTSUPP => Some(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel lacks CONFIG_INET_DIAG_DESTROY",
        )),
        _ => None,
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashSet;
    use std::io;

    use super::super::owners::Owners;
    use super::super::procfs;
    use super::super::sock_diag::DiagSocket;
    use super::super::socket::SocketRecord;
    use super::{fatal, AgeTracker, ReapFilter, ReapOutcome, ReapReport, Victim};

    pub(super) fn reap(filter: &ReapFilter, tracker: &mut AgeTracker) -> io::Result<ReapReport> {
        match &filter.netns {
            None => reap_here(filter, tracker),
            Some(name) => {
                let filter = filter.clone();
                let mut moved = std::mem::take(tracker);
                let (report, moved) = super::super::netns::run_in(name, move || {
                    let report = reap_here(&filter, &mut moved)?;
                    Ok((report, moved))
                })?;
                *tracker = moved;
                Ok(report)
            }
        }
    }

    fn reap_here(filter: &ReapFilter, tracker: &mut AgeTracker) -> io::Result<ReapReport> {
        let mut diag = DiagSocket::open()?;
        let (local, remote) = if filter.remote {
            (None, Some(filter.port))
        } else {
            (Some(filter.port), None)
        };
        let mut sockets =
            diag.dump_between(local, remote, Some(filter.state), procfs::fin_timeout())?;
        tracker.refine(&mut sockets, std::time::Instant::now());
        let old_enough = |s: &SocketRecord| s.lingered >= Some(filter.min_idle);
        // The owners of the sockets that matter (every candidate's for --pid, else only
        // the old ones'): a guard's round with nothing to reap reads no /proc/PID/fd.
        let inodes: HashSet<u64> = sockets
            .iter()
            .filter(|s| filter.pid.is_some() || old_enough(s))
            .map(|s| s.inode)
            .filter(|i| *i != 0)
            .collect();
        let owners = Owners::scan(&inodes);
        if let Some(pid) = filter.pid {
            sockets.retain(|s| owners.of(s.inode).any(|p| p.pid == pid));
        }
        let (mut matched, younger): (Vec<_>, Vec<_>) = sockets
            .into_iter()
            .filter(|s| s.lingered.is_some())
            .partition(old_enough);
        matched.sort_by_key(|s| std::cmp::Reverse(s.lingered));
        let mut victims = Vec::with_capacity(matched.len());
        for (i, socket) in matched.into_iter().enumerate() {
            let outcome = if filter.limit.is_some_and(|limit| i >= limit) {
                ReapOutcome::OverLimit
            } else if filter.dry_run {
                ReapOutcome::WouldDestroy
            } else {
                match diag.destroy(&socket) {
                    Ok(()) => ReapOutcome::Destroyed,
                    Err(e) => match (fatal(&e), e.raw_os_error()) {
                        (Some(fatal), _) => return Err(fatal),
                        (None, Some(libc::ENOENT)) => ReapOutcome::Gone,
                        (None, Some(libc::ESTALE)) => ReapOutcome::Replaced,
                        (None, _) => ReapOutcome::Failed(e.to_string()),
                    },
                }
            };
            victims.push(Victim {
                state: socket.state,
                local: socket.local,
                peer: socket.peer,
                owners: owners.of(socket.inode).collect(),
                orphan: socket.is_orphan(),
                idle: socket.lingered.unwrap_or_default(),
                idle_at_least: socket.lower_bound,
                outcome,
            });
        }
        Ok(ReapReport {
            victims,
            younger: younger.len() as u64,
            min_idle: filter.min_idle,
            dry_run: filter.dry_run,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    use super::{ReapFilter, ReapReport};

    pub(super) fn reap(_: &ReapFilter, _: &mut super::AgeTracker) -> std::io::Result<ReapReport> {
        Err(super::super::unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_refusals_say_what_to_do() {
        let eperm = fatal(&io::Error::from_raw_os_error(libc::EPERM)).unwrap();
        assert_eq!(eperm.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(eperm.to_string(), "needs CAP_NET_ADMIN (run as root)");
        let unsupported = fatal(&io::Error::from_raw_os_error(libc::EOPNOTSUPP)).unwrap();
        assert_eq!(
            unsupported.to_string(),
            "this kernel lacks CONFIG_INET_DIAG_DESTROY"
        );
        assert!(fatal(&io::Error::from_raw_os_error(libc::ENOENT)).is_none());
        assert!(fatal(&io::Error::from_raw_os_error(libc::ESTALE)).is_none());
    }

    #[test]
    fn only_the_four_lingering_states() {
        for state in [
            KernelState::Established,
            KernelState::TimeWait,
            KernelState::Listen,
        ] {
            let filter = ReapFilter::new(1, Duration::ZERO).with_state(state);
            let err = reap(&filter).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{state}");
        }
    }

    #[test]
    fn the_summary_line() {
        let victim = |outcome| Victim {
            state: KernelState::CloseWait,
            local: "127.0.0.1:8080".parse().unwrap(),
            peer: "127.0.0.1:50000".parse().unwrap(),
            owners: vec![Process {
                pid: 7,
                command: "java".into(),
            }],
            orphan: false,
            idle: Duration::from_millis(12_340),
            idle_at_least: false,
            outcome,
        };
        let report = ReapReport {
            victims: vec![
                victim(ReapOutcome::Destroyed),
                victim(ReapOutcome::Gone),
                victim(ReapOutcome::OverLimit),
            ],
            younger: 5,
            min_idle: Duration::from_secs(3),
            dry_run: false,
        };
        assert_eq!(
            report.to_string(),
            "reaped 1 of 3; 1 over the limit left alone; 1 gone or replaced meanwhile; \
             5 younger than 3.0 s left alone"
        );
        assert_eq!(
            report.victims[0].to_string(),
            "CLOSE_WAIT 127.0.0.1:8080 127.0.0.1:50000 owner 7 java idle 12.3 s destroyed"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["matched"].as_u64(), json["reaped"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(json["victims"][0]["outcome"], "destroyed");
        assert_eq!(json["victims"][0]["idle_ms"], 12_340);
        assert_eq!(json["victims"][0]["owners"][0]["pid"], 7);
    }
}
