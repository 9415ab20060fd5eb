//! A census in the Prometheus text format (version 0.0.4): what `tcp-hygiene exporter`
//! serves on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tcp_hygiene::KernelState;

use super::port::{PortCensus, Side, STATE_ORDER};
use super::Census;

/// At most this many ports per side get series of their own (the biggest groups); the
/// rest are summed under `port="other"`, so that a host with thousands of peers, or
/// listeners on random ports, still has a bounded number of series.
pub const MAX_PORTS_PER_SIDE: usize = 100;

/// One port's share of a side: the groups summed (the client side's remote endpoints by
/// remote port).
#[derive(Default)]
struct PortSeries {
    sockets: u64,
    counts: BTreeMap<usize, u64>,
    orphans: u64,
    lingered_max: BTreeMap<usize, Duration>,
    accept_queue: Option<u64>,
    backlog: Option<u64>,
}

impl PortSeries {
    fn add(&mut self, group: &PortCensus) {
        self.sockets += group.sockets();
        for (i, state) in STATE_ORDER.iter().enumerate() {
            let n = group.count(*state);
            if n > 0 {
                *self.counts.entry(i).or_default() += n;
            }
            // ESTABLISHED's age is its idle time, not time in the state: left out.
            if let Some(l) = group
                .lingered(*state)
                .filter(|_| *state != KernelState::Established)
            {
                let max = self.lingered_max.entry(i).or_default();
                *max = (*max).max(l.oldest);
            }
        }
        self.orphans += group.orphans();
        if let Some(queue) = group.listen() {
            *self.accept_queue.get_or_insert(0) += u64::from(queue.accept_queue);
            if let Some(backlog) = queue.backlog {
                *self.backlog.get_or_insert(0) += u64::from(backlog);
            }
        }
    }
}

/// The series of one side: by port, the biggest [`MAX_PORTS_PER_SIDE`], then `other`.
fn side_series<'a>(groups: impl Iterator<Item = &'a PortCensus>) -> Vec<(String, PortSeries)> {
    let mut by_port: BTreeMap<u16, PortSeries> = BTreeMap::new();
    for group in groups {
        by_port.entry(group.port()).or_default().add(group);
    }
    let mut ports: Vec<(u16, PortSeries)> = by_port.into_iter().collect();
    ports.sort_by_key(|(port, s)| (std::cmp::Reverse(s.sockets), *port));
    let mut series: Vec<(String, PortSeries)> = Vec::new();
    let mut other = PortSeries::default();
    for (i, (port, s)) in ports.into_iter().enumerate() {
        if i < MAX_PORTS_PER_SIDE {
            series.push((port.to_string(), s));
        } else {
            other.sockets += s.sockets;
            for (state, n) in s.counts {
                *other.counts.entry(state).or_default() += n;
            }
            other.orphans += s.orphans;
            for (state, age) in s.lingered_max {
                let max = other.lingered_max.entry(state).or_default();
                *max = (*max).max(age);
            }
            // Accept queues are per listening port: not summed into `other`.
        }
    }
    if other.sockets > 0 {
        series.push(("other".to_owned(), other));
    }
    series
}

/// `SYN_RECV`, `CLOSE_WAIT`, …: `ss`'s names with underscores, as the census uses.
fn state_label(i: usize) -> &'static str {
    let state: KernelState = STATE_ORDER[i];
    state.as_str()
}

impl Census {
    /// The census in the Prometheus text exposition format (0.0.4), `took` being how long
    /// it took to read:
    ///
    /// | Metric | Type | Labels |
    /// |---|---|---|
    /// | `tcp_hygiene_sockets` | gauge | `side` (`server`, `client`), `port`, `state` |
    /// | `tcp_hygiene_orphans` | gauge | `side`, `port` |
    /// | `tcp_hygiene_lingered_seconds_max` | gauge | `side`, `port`, `state` |
    /// | `tcp_hygiene_accept_queue` | gauge | `port` |
    /// | `tcp_hygiene_accept_backlog` | gauge | `port` |
    /// | `tcp_hygiene_listen_overflows_total` | counter | — |
    /// | `tcp_hygiene_census_duration_seconds` | gauge | — |
    ///
    /// `port` is the local listening port on the server side and the remote port on the
    /// client side (the remote addresses summed): never an ephemeral local port. Each side
    /// has at most [`MAX_PORTS_PER_SIDE`] ports of its own, the biggest; the rest are
    /// summed under `port="other"`. States with no socket have no series. The lingering
    /// maximum is the oldest socket's age where the census knows it (a lower bound where
    /// the kernel does not date the state; see the crate docs), for every state but
    /// `ESTABLISHED` (whose age is an idle time) and `LISTEN`.
    /// `tcp_hygiene_listen_overflows_total` is absent when `/proc/net/netstat` could not be
    /// read.
    pub fn to_prometheus(&self, took: Duration) -> String {
        let sides = [
            (Side::Server, side_series(self.ports())),
            (Side::Client, side_series(self.remotes())),
        ];
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "tcp_hygiene_sockets",
            "gauge",
            "TCP sockets by side (server: local listening port; client: remote port) and state.",
        );
        let mut lines = String::new();
        for (side, series) in &sides {
            for (port, s) in series {
                for (state, n) in &s.counts {
                    let state = state_label(*state);
                    let _ = writeln!(
                        lines,
                        "tcp_hygiene_sockets{{side=\"{side}\",port=\"{port}\",state=\"{state}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(&std::mem::take(&mut lines));
        let _ = writeln!(
            out,
            "# HELP tcp_hygiene_orphans Sockets closed by their process and still in FIN_WAIT_1, FIN_WAIT_2, LAST_ACK or CLOSING.\n# TYPE tcp_hygiene_orphans gauge"
        );
        for (side, series) in &sides {
            for (port, s) in series {
                let _ = writeln!(
                    out,
                    "tcp_hygiene_orphans{{side=\"{side}\",port=\"{port}\"}} {}",
                    s.orphans
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tcp_hygiene_lingered_seconds_max How long the oldest socket of a pile has been in its state (at least).\n# TYPE tcp_hygiene_lingered_seconds_max gauge"
        );
        for (side, series) in &sides {
            for (port, s) in series {
                for (state, age) in &s.lingered_max {
                    let state = state_label(*state);
                    let _ = writeln!(
                        out,
                        "tcp_hygiene_lingered_seconds_max{{side=\"{side}\",port=\"{port}\",state=\"{state}\"}} {:.3}",
                        age.as_secs_f64()
                    );
                }
            }
        }
        let server = &sides[0].1;
        let _ = writeln!(
            out,
            "# HELP tcp_hygiene_accept_queue Connections waiting to be accepted on a listening port.\n# TYPE tcp_hygiene_accept_queue gauge"
        );
        for (port, s) in server {
            if let Some(queue) = s.accept_queue {
                let _ = writeln!(out, "tcp_hygiene_accept_queue{{port=\"{port}\"}} {queue}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP tcp_hygiene_accept_backlog The most a listening port's accept queues hold (listen() backlog, capped by net.core.somaxconn).\n# TYPE tcp_hygiene_accept_backlog gauge"
        );
        for (port, s) in server {
            if let Some(backlog) = s.backlog {
                let _ = writeln!(
                    out,
                    "tcp_hygiene_accept_backlog{{port=\"{port}\"}} {backlog}"
                );
            }
        }
        if let Some(overflows) = self.listen_overflows() {
            let _ = writeln!(
                out,
                "# HELP tcp_hygiene_listen_overflows_total Handshakes dropped because an accept queue was full (ListenOverflows).\n# TYPE tcp_hygiene_listen_overflows_total counter\ntcp_hygiene_listen_overflows_total {overflows}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tcp_hygiene_census_duration_seconds How long reading the socket tables took.\n# TYPE tcp_hygiene_census_duration_seconds gauge\ntcp_hygiene_census_duration_seconds {:.6}",
            took.as_secs_f64()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::socket::SocketRecord;
    use super::*;
    use KernelState::*;

    fn record(state: KernelState, local: &str, peer: &str, age_ms: u64) -> SocketRecord {
        SocketRecord {
            state,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            inode: 1,
            recv_queue: 0,
            backlog: (state == Listen).then_some(128),
            lingered: (state != Listen).then(|| Duration::from_millis(age_ms)),
            lower_bound: false,
            upper_bound: None,
            cookie: None,
            interface: 0,
        }
    }

    #[test]
    fn series_by_side_and_port_never_an_ephemeral_local_port() {
        let mut sockets = vec![
            record(Listen, "0.0.0.0:8080", "0.0.0.0:0", 0),
            record(CloseWait, "10.0.0.1:8080", "10.0.0.9:40000", 2_500),
            record(CloseWait, "10.0.0.1:8080", "10.0.0.9:40001", 1_000),
        ];
        // A pool to two database replicas on port 5432, from ephemeral ports.
        for i in 0..30u16 {
            let peer = if i % 2 == 0 {
                "10.0.0.5:5432"
            } else {
                "10.0.0.6:5432"
            };
            sockets.push(record(
                CloseWait,
                &format!("10.0.0.1:{}", 41_000 + i),
                peer,
                7_000,
            ));
        }
        let census = Census::build(&sockets, None, &(32768..=60999));
        let text = census.to_prometheus(Duration::from_millis(3));
        assert!(
            text.contains(
                "tcp_hygiene_sockets{side=\"server\",port=\"8080\",state=\"CLOSE_WAIT\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tcp_hygiene_sockets{side=\"server\",port=\"8080\",state=\"LISTEN\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tcp_hygiene_sockets{side=\"client\",port=\"5432\",state=\"CLOSE_WAIT\"} 30\n"
            ),
            "{text}"
        );
        assert!(text.contains("tcp_hygiene_lingered_seconds_max{side=\"server\",port=\"8080\",state=\"CLOSE_WAIT\"} 2.500\n"), "{text}");
        assert!(
            text.contains("tcp_hygiene_accept_backlog{port=\"8080\"} 128\n"),
            "{text}"
        );
        assert!(
            text.contains("tcp_hygiene_census_duration_seconds 0.003000\n"),
            "{text}"
        );
        assert!(
            !text.contains("port=\"41"),
            "an ephemeral port in a label: {text}"
        );
    }

    #[test]
    fn ports_beyond_the_cap_are_summed_as_other() {
        let sockets: Vec<SocketRecord> = (0..500u16)
            .map(|i| {
                record(
                    TimeWait,
                    &format!("10.0.0.1:{}", 33_000 + i),
                    &format!("10.0.0.5:{}", 1_000 + i),
                    1,
                )
            })
            .collect();
        let census = Census::build(&sockets, None, &(32768..=60999));
        let text = census.to_prometheus(Duration::ZERO);
        let series = text
            .lines()
            .filter(|l| l.starts_with("tcp_hygiene_sockets{"))
            .count();
        assert_eq!(series, MAX_PORTS_PER_SIDE + 1, "{text}");
        assert!(
            text.contains(
                "tcp_hygiene_sockets{side=\"client\",port=\"other\",state=\"TIME_WAIT\"} 400\n"
            ),
            "{text}"
        );
    }
}
