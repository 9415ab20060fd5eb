//! What each unusual pile of sockets means, in TCP terms, and what to do about it.
//!
//! Every state other than `ESTABLISHED` and `LISTEN` with at least one socket gets a line,
//! whatever its age: how long it has lingered is part of the line, not a threshold for
//! it. Each line starts with the state's name, so that a script can `grep ^CLOSE_WAIT`.

use std::time::Duration;

use tcp_hygiene::KernelState;

use super::port::{Lingering, PortCensus, STATE_ORDER};
use super::procfs::ListenCounters;

/// The lines for one port: its unusual states, then a full accept queue.
pub(crate) fn port_lines(port: &PortCensus) -> Vec<String> {
    let p = port.port();
    let mut lines: Vec<String> = STATE_ORDER
        .iter()
        .filter(|s| !matches!(s, KernelState::Established | KernelState::Listen))
        .filter(|s| port.count(**s) > 0)
        .map(|state| {
            let n = port.count(*state);
            let orphans = port.orphans_in(*state);
            let mut head = format!("{state}: {n} on port {p}");
            if orphans > 0 {
                head += &format!(" ({orphans} orphaned)");
            }
            let age = lingered(port.lingered(*state));
            format!("{head}, {age}: {}", meaning(*state, port))
        })
        .collect();
    if let Some(queue) = port.listen().filter(|q| q.full) {
        let backlog = queue.backlog.map_or("?".into(), |b| b.to_string());
        lines.push(format!(
            "LISTEN: port {p}: accept queue {} over its backlog {backlog}: full, so the kernel \
             drops new handshakes (ListenOverflows): the accept loop is too slow or stuck. \
             Accept faster (more workers, no blocking in the accept loop) or raise the \
             backlog (listen(), net.core.somaxconn).",
            queue.accept_queue
        ));
    }
    lines
}

/// The lines about the whole namespace: listen overflows.
pub(crate) fn host_lines(counters: Option<ListenCounters>) -> Vec<String> {
    match counters {
        Some(c) if c.overflows > 0 => vec![format!(
            "ListenOverflows: {} (ListenDrops {}) since boot or since this network namespace \
             was created: accept queues overflowed and handshakes were dropped: an accept \
             loop too slow or stuck. A LISTEN line names the port while its queue is full; \
             watch the counter (census --watch) to see whether it still grows.",
            c.overflows, c.drops
        )],
        _ => Vec::new(),
    }
}

/// "lingered 1.2 s to 35 s (median 20 s)".
fn lingered(lingering: Option<Lingering>) -> String {
    match lingering {
        None => "age unknown (no tcp_info in /proc/net/tcp)".to_owned(),
        Some(l) if human(l.newest) == human(l.oldest) => format!("lingered {}", human(l.oldest)),
        Some(l) => format!(
            "lingered {} to {} (median {})",
            human(l.newest),
            human(l.oldest),
            human(l.median)
        ),
    }
}

fn meaning(state: KernelState, port: &PortCensus) -> String {
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
                "the peers closed (sent FIN) and the local application has not closed these \
                 sockets: a handler that hangs, or forgets to close after reading EOF. Linux \
                 has no timer for CLOSE_WAIT: each lasts until its process closes it or \
                 exits.{unaccepted} Fix the application (close on EOF, or a timeout). {}",
                reap("")
            )
        }
        FinWait1 => format!(
            "our FIN (and the data queued before it) is not acknowledged: the peer stopped \
             reading (zero window) or is gone. Orphaned ones end when the kernel gives up \
             (tcp_orphan_retries); ones a process holds last as long as its data stays \
             unacknowledged, which TCP_USER_TIMEOUT bounds (tcp_retries2 alone allows about \
             15 min). Set TCP_USER_TIMEOUT, or reset after a write timeout. {}",
            reap(" --state fin-wait-1")
        ),
        FinWait2 => {
            let orphans = port.orphans_in(FinWait2);
            let held = port.count(FinWait2) - orphans;
            format!(
                "we closed our side and the peer acknowledged it, but the peer's application \
                 never closes its side. The {orphans} orphaned end after tcp_fin_timeout; the \
                 {held} a process still holds (it only shut down writing) never end on their \
                 own: close them after a deadline. {}",
                reap(" --state fin-wait-2")
            )
        }
        LastAck => format!(
            "the peer closed, we closed too, and our FIN is never acknowledged: the peer is \
             gone (crashed, unplugged, or a firewall drops its packets). They end when \
             retransmissions give up (tcp_orphan_retries, or tcp_retries2 if a process still \
             holds them). {}",
            reap(" --state last-ack")
        ),
        Closing => "both sides closed at once and the ACK of our FIN was lost: packet loss \
                    between the hosts (or a defect in the peer's stack). They end when \
                    retransmissions give up; many of them point at the path, not the \
                    application."
            .to_owned(),
        TimeWait => "this side closed first; each lasts 60 s (fixed on Linux) and costs \
                     little. Harmless unless counted in tens of thousands: then let clients \
                     close first, reuse connections (keep-alive, pools), or for outgoing \
                     connections set net.ipv4.tcp_tw_reuse."
            .to_owned(),
        SynRecv | NewSynRecv => "handshakes that do not complete: we answered SYN with SYN-ACK \
                                 and the final ACK does not arrive: a SYN flood from spoofed \
                                 addresses, clients or a path losing packets, or a full \
                                 accept queue on which the kernel drops final ACKs (see \
                                 ListenOverflows). Keep net.ipv4.tcp_syncookies=1; if the \
                                 accept queue is full, accept faster."
            .to_owned(),
        SynSent => "connections this host opens get no answer: the peer is down, or a \
                    firewall silently drops the SYNs. Use a connect timeout."
            .to_owned(),
        // Established, Listen, Close, Unknown, and any state the library's `KernelState`
        // gains later.
        _ => "sockets in a state the census does not diagnose.".to_owned(),
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
        assert!(host_lines(None).is_empty());
        assert!(host_lines(Some(ListenCounters::default())).is_empty());
        let lines = host_lines(Some(ListenCounters {
            overflows: 3,
            drops: 4,
        }));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("ListenOverflows: 3 (ListenDrops 4)"));
    }
}
