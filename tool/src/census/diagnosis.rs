//! What each unusual pile of sockets means, in TCP terms, and what to do about it, worded
//! for the side: a server's pile on its listening port, or a client's pile towards one
//! remote endpoint.
//!
//! A pile gets a line only when it is worth an operator's look: some of its sockets have
//! lingered longer than [`AGE_FLOOR`] (1 s; or some have an age the census cannot tell),
//! or, for
//! `TIME_WAIT`, the group holds at least [`TIME_WAIT_FLOOR`]. The normal churn of a busy
//! host stays quiet. Each line starts with the state's name, so that a script can
//! `grep ^CLOSE_WAIT`.

use std::time::Duration;

use tcp_hygiene::KernelState;

use super::port::{Lingering, PortCensus, Side, AGE_FLOOR, STATE_ORDER, TIME_WAIT_FLOOR};
use super::procfs::ListenCounters;

/// Whether the pile of `state` in `group` is worth a line.
fn worth_a_line(group: &PortCensus, state: KernelState) -> bool {
    use KernelState::*;
    let n = group.count(state);
    match state {
        Established | Listen => false,
        _ if n == 0 => false,
        TimeWait => n >= TIME_WAIT_FLOOR,
        _ => match group.lingered(state) {
            // Some of unknown age (from /proc): they may be old.
            Some(l) if l.sockets == n => l.over_floor > 0,
            _ => true,
        },
    }
}

impl PortCensus {
    /// One line for each unusual pile: every state other than `ESTABLISHED` and `LISTEN`
    /// with sockets older than [`AGE_FLOOR`] (or of unknown age), `TIME_WAIT` from
    /// [`TIME_WAIT_FLOOR`] sockets on, and a full accept queue. Each line starts with the
    /// state's name and says how long the pile has lingered, what it means in TCP terms
    /// for this side, and what to do.
    pub fn diagnosis(&self) -> Vec<String> {
        port_lines(self)
    }
}

/// The lines for one group: its unusual states, then a full accept queue.
pub(crate) fn port_lines(group: &PortCensus) -> Vec<String> {
    let mut lines: Vec<String> = STATE_ORDER
        .iter()
        .filter(|s| worth_a_line(group, **s))
        .map(|state| {
            let n = group.count(*state);
            let orphans = group.orphans_in(*state);
            let mut head = match group.remote() {
                None => format!("{state}: {n} on port {}", group.port()),
                Some(remote) => format!("{state}: {n} to {remote}"),
            };
            let mut notes = Vec::new();
            if let Some(l) = group
                .lingered(*state)
                .filter(|l| l.over_floor > 0 && l.over_floor < n)
            {
                if *state != KernelState::TimeWait {
                    notes.push(format!("{} over {}", l.over_floor, human(AGE_FLOOR)));
                }
            }
            if orphans > 0 {
                notes.push(format!("{orphans} orphaned"));
            }
            if !notes.is_empty() {
                head += &format!(" ({})", notes.join(", "));
            }
            let mut age = lingered(group.lingered(*state));
            let undated = n - group.lingered(*state).map_or(0, |l| l.sockets);
            if undated > 0 && undated < n {
                age += &format!(", {undated} of unknown age");
            }
            let meaning = match group.side() {
                Side::Client => client_meaning(*state, group),
                _ => server_meaning(*state, group),
            };
            format!("{head}, {age}: {meaning}")
        })
        .collect();
    if let Some(queue) = group.listen().filter(|q| q.full) {
        let backlog = queue.backlog.map_or("?".into(), |b| b.to_string());
        lines.push(format!(
            "LISTEN: port {}: accept queue {} over its backlog {backlog}: full, so the kernel \
             drops new handshakes (ListenOverflows): the accept loop is too slow or stuck. \
             Accept faster (more workers, no blocking in the accept loop) or raise the \
             backlog (listen(), net.core.somaxconn).",
            group.port(),
            queue.accept_queue
        ));
    }
    lines
}

/// "since boot" for the host's own namespace; another namespace's counters start when it
/// was created.
pub(crate) fn counted_since(in_other_netns: bool) -> &'static str {
    if in_other_netns {
        "since this network namespace was created"
    } else {
        "since boot"
    }
}

/// The lines about the whole namespace: listen overflows.
pub(crate) fn host_lines(counters: Option<ListenCounters>, in_other_netns: bool) -> Vec<String> {
    match counters {
        Some(c) if c.overflows > 0 => vec![format!(
            "ListenOverflows: {} (ListenDrops {}) {}: accept queues overflowed and \
             handshakes were dropped: an accept loop too slow or stuck. A LISTEN line names \
             the port while its queue is full; watch the counter (census --watch) to see \
             whether it still grows.",
            c.overflows,
            c.drops,
            counted_since(in_other_netns)
        )],
        _ => Vec::new(),
    }
}

/// "lingered 1.2 s to 35 s (median 20 s)", "lingered at least 1.2 s to 35 s".
fn lingered(lingering: Option<Lingering>) -> String {
    let Some(l) = lingering else {
        return "age unknown".to_owned();
    };
    let at_least = match l.at_least {
        0 => "",
        n if n == l.sockets => "at least ",
        _ => "(some at least) ",
    };
    if human(l.newest) == human(l.oldest) {
        format!("lingered {at_least}{}", human(l.oldest))
    } else {
        format!(
            "lingered {at_least}{} to {} (median {})",
            human(l.newest),
            human(l.oldest),
            human(l.median)
        )
    }
}

fn server_meaning(state: KernelState, port: &PortCensus) -> String {
    use KernelState::*;
    let p = port.port();
    let reap = |flag: &str| {
        format!("To free the ones idle over a minute now: tcp-hygiene reap --port {p}{flag} --idle-ms 60000")
    };
    match state {
        CloseWait => {
            let unaccepted = port.awaiting_accept_in(CloseWait);
            let unaccepted = if unaccepted > 0 {
                format!(
                    " {unaccepted} were never accepted: their clients gave up while waiting in \
                     the accept queue, so the accept loop is too slow."
                )
            } else {
                String::new()
            };
            format!(
                "the clients closed (sent FIN) and the local server has not closed these \
                 sockets: a handler that hangs, or forgets to close after reading EOF. Linux \
                 has no timer for CLOSE_WAIT: each lasts until its process closes it or \
                 exits.{unaccepted} Fix the application (close on EOF, or a timeout). {}",
                reap("")
            )
        }
        FinWait1 => format!(
            "the server's FIN (and the data queued before it) is not acknowledged: the client \
             stopped reading (zero window) or is gone. Orphaned ones end when the kernel gives \
             up (tcp_orphan_retries); ones a process holds last as long as its data stays \
             unacknowledged, which TCP_USER_TIMEOUT bounds (tcp_retries2 alone allows about \
             15 min). Set TCP_USER_TIMEOUT, or reset after a write timeout. {}",
            reap(" --state fin-wait-1")
        ),
        FinWait2 => {
            format!(
                "the server closed its side and the client acknowledged it, but the client \
                 application never closes its side. {} Close them after a deadline. {}",
                fin_wait_2_ends(port),
                reap(" --state fin-wait-2")
            )
        }
        LastAck => format!(
            "the client closed, the server closed too, and its FIN is never acknowledged: the \
             client is gone (crashed, unplugged, or a firewall drops its packets). They end \
             when retransmissions give up (tcp_orphan_retries, or tcp_retries2 if a process \
             still holds them). {}",
            reap(" --state last-ack")
        ),
        Closing => "both sides closed at once and the ACK of the server's FIN was lost: \
                    packet loss between the hosts (or a defect in the client's stack). They \
                    end when retransmissions give up; many of them point at the path, not \
                    the application."
            .to_owned(),
        TimeWait => "the server closed first; each lasts 60 s (fixed on Linux) and costs \
                     little. Harmless unless counted in tens of thousands: then let clients \
                     close first (keep-alive with a client-side idle timeout)."
            .to_owned(),
        SynRecv | NewSynRecv => "handshakes that do not complete: the server answered SYN \
                                 with SYN-ACK and the final ACK does not arrive: a SYN flood \
                                 from spoofed addresses, clients or a path losing packets, or \
                                 a full accept queue on which the kernel drops final ACKs \
                                 (see ListenOverflows). Keep net.ipv4.tcp_syncookies=1; if \
                                 the accept queue is full, accept faster."
            .to_owned(),
        // SynSent, Established, Listen, Close, Unknown, and any state the library's
        // `KernelState` gains later.
        _ => "sockets in a state the census does not diagnose on a server's port.".to_owned(),
    }
}

fn client_meaning(state: KernelState, group: &PortCensus) -> String {
    use KernelState::*;
    let to = group
        .remote()
        .map_or_else(|| format!("port {}", group.port()), |r| r.to_string());
    let p = group.port();
    let reap = |flag: &str| {
        format!(
            "To free the ones idle over a minute now (every connection to remote port {p}, \
             whatever the address): tcp-hygiene reap --remote-port {p}{flag} --idle-ms 60000"
        )
    };
    match state {
        CloseWait => format!(
            "connections this host opened to {to} that the server closed (sent FIN) and the \
             local client never closed: a connection pool that keeps connections the server \
             closed (an idle timeout on the server shorter than the pool's), or a client that \
             forgets to close after reading EOF. Linux has no timer for CLOSE_WAIT. Have the \
             pool check connections before reuse and close on EOF, or give it an idle timeout \
             shorter than the server's. {}",
            reap("")
        ),
        FinWait1 => format!(
            "this host closed connections to {to} and its FIN (and the data queued before it) \
             is not acknowledged: the server stopped reading (zero window) or is gone. Set \
             TCP_USER_TIMEOUT on the client sockets. {}",
            reap(" --state fin-wait-1")
        ),
        FinWait2 => {
            format!(
                "this host closed its side of connections to {to}, the server acknowledged and \
                 never closes its side. {} {}",
                fin_wait_2_ends(group),
                reap(" --state fin-wait-2")
            )
        }
        LastAck => format!(
            "{to} closed, this host closed too, and its FIN is never acknowledged: the server \
             is gone or a firewall drops its packets. They end when retransmissions give up. {}",
            reap(" --state last-ack")
        ),
        Closing => format!(
            "both sides closed at once and the ACK of this host's FIN to {to} was lost: \
             packet loss on the path. They end when retransmissions give up."
        ),
        TimeWait => format!(
            "this host closed connections to {to} first; each holds a local port for 60 s \
             (fixed on Linux), and the namespace has only the ephemeral range \
             (ip_local_port_range) to open new ones to {to} with: reuse connections \
             (keep-alive, a pool), or set net.ipv4.tcp_tw_reuse=1."
        ),
        SynSent => format!(
            "connections this host opens to {to} get no answer: the server is down, or a \
             firewall silently drops the SYNs. Use a connect timeout."
        ),
        // Established, Listen, SynRecv, Close, Unknown, and any state the library's
        // `KernelState` gains later.
        _ => format!("sockets to {to} in a state the census does not diagnose."),
    }
}

/// How a group's FIN_WAIT_2 sockets end: "The 3 orphaned end after tcp_fin_timeout; the
/// 2 a process still holds (it only shut down writing) never end on their own.", saying
/// only what applies.
fn fin_wait_2_ends(group: &PortCensus) -> String {
    let orphans = group.orphans_in(KernelState::FinWait2);
    let held = group.count(KernelState::FinWait2) - orphans;
    let orphaned = "end after tcp_fin_timeout";
    let holding = "(it only shut down writing) never end on their own";
    match (orphans, held) {
        (0, held) => format!("The {held} a process still holds {holding}."),
        (orphans, 0) => format!("The {orphans} orphaned {orphaned}."),
        (orphans, held) => {
            format!(
                "The {orphans} orphaned {orphaned}; the {held} a process still holds {holding}."
            )
        }
    }
}

/// A duration for people: "850 ms", "12.3 s", "4 min 05 s", "3 h 02 min".
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{} ms", d.as_millis()),
        1..60 => format!("{:.1} s", d.as_secs_f64()),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(human(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3 h 02 min");
    }

    #[test]
    fn listen_overflows_only_when_there_were_some() {
        assert!(host_lines(None, false).is_empty());
        assert!(host_lines(Some(ListenCounters::default()), false).is_empty());
        let counters = Some(ListenCounters {
            overflows: 3,
            drops: 4,
        });
        let lines = host_lines(counters, false);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("ListenOverflows: 3 (ListenDrops 4) since boot:"));
        let lines = host_lines(counters, true);
        assert!(
            lines[0].contains("since this network namespace was created")
                && !lines[0].contains("boot"),
            "{lines:?}"
        );
    }
}
