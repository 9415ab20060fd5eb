//! The host census against the kernel's own view: every state of the unusual-states table
//! produced for real — on loopback (IPv4 and IPv6), and in network namespaces where a
//! `blackhole` qdisc loses the packets a state needs lost — counted by the library (both
//! sources) and by the `tcp-hygiene` binary, and compared with `ss -tan`.
//!
//! The namespace tests need root, the others `ss`: without them a test skips with a line
//! saying so, and fails instead under `TCP_HYGIENE_SYSTEM_TESTS=1` (as in CI).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use support::census::{census_view, n, ss_here, ss_view, wait_until, SsView};
use support::netns::{in_netns, NetPair};
use support::piles::{
    fill_send_buffer, loopback_piles, lost_server_packets, past_the_age_floor, small_window_client,
    vanished_client, FIRST_PILES_AGE, SETTLE,
};
use support::{require, Need};
use tcp_hygiene_cli::{AgeTracker, Census, CensusQuery, KernelState, SockStat, Source};

/// The census view equals `ss`'s. Each side is read between two identical `ss` readings,
/// so a socket changing state meanwhile retries instead of failing; a real difference
/// fails.
fn assert_census_matches_ss(what: &str, ss: impl Fn() -> SsView, census: impl Fn() -> SsView) {
    for _ in 0..20 {
        let before = ss();
        let counted = census();
        if ss() == before {
            assert_eq!(counted, before, "{what}: census (left) vs ss -tan (right)");
            return;
        }
    }
    panic!("{what}: ss never stable for two readings");
}

fn census_of(port: u16, source: Source) -> Census {
    CensusQuery::new().port(port).source(source).run().unwrap()
}

fn loopback_states_match_ss(ip: IpAddr) {
    let piles = loopback_piles(ip);
    let port = piles.port;
    for source in [Source::SockDiag, Source::Procfs] {
        assert_census_matches_ss(
            &format!("{ip} {source}"),
            || ss_here(port),
            || census_view(census_of(port, source).port(port)),
        );
    }

    past_the_age_floor(piles.close_wait_fin);
    let census = Census::of_local_port(port).unwrap();
    assert_eq!(census.source(), Some(Source::SockDiag));
    assert_eq!(census.fallback_reason(), None);
    assert_eq!(census.count(KernelState::CloseWait), 3);
    assert_eq!(census.total(), 11, "connections, the listener left out");
    let p = census.port(port).unwrap();
    assert_eq!(p.orphans_in(KernelState::FinWait1), 1);
    assert_eq!(p.orphans_in(KernelState::FinWait2), 1);
    // Every socket with a descriptor is this process's (and, for an instant, a child
    // another test forks holds copies until it execs).
    assert!(
        p.processes().iter().any(|o| o.pid == std::process::id()),
        "{:?}",
        p.processes()
    );
    assert_eq!(p.owner_unknown(), 0);
    let queue = p.listen().unwrap();
    assert_eq!(
        (queue.listeners, queue.accept_queue, queue.full),
        (1, 0, false)
    );
    assert!(queue.backlog.is_some_and(|b| b > 0));

    // CLOSE_WAIT is dated by the FIN (tcpi_last_ack_recv), not by the data the clients
    // sent 1.5 s before it (tcpi_last_data_recv).
    let close_wait = p.lingered(KernelState::CloseWait).unwrap();
    assert_eq!(close_wait.sockets, 3);
    let since_fin = piles.close_wait_fin.elapsed();
    assert!(
        close_wait.oldest <= since_fin + Duration::from_millis(50),
        "CLOSE_WAIT lingered {:?}, FIN sent {since_fin:?} ago",
        close_wait.oldest
    );
    let since_data = since_fin + FIRST_PILES_AGE.saturating_sub(Duration::from_millis(100));
    assert!(
        close_wait.oldest < since_data,
        "dated by the data: {close_wait:?}"
    );
    // Piles made before: at least that old, from tcp_info (held FIN_WAIT_2) and from
    // time-wait timers (orphaned FIN_WAIT_2, TIME_WAIT).
    let started = piles.first_started.elapsed();
    for state in [KernelState::FinWait2, KernelState::TimeWait] {
        let l = p
            .lingered(state)
            .unwrap_or_else(|| panic!("no age for {state}"));
        assert_eq!(l.sockets, 2, "{state}");
        assert!(
            l.newest >= FIRST_PILES_AGE - Duration::from_millis(50)
                && l.oldest <= started + Duration::from_millis(100),
            "{state} lingered {l:?}, made from {started:?} ago"
        );
        assert_eq!(l.at_least, 0, "{state}: dated by the kernel: {l:?}");
    }
    // FIN_WAIT_1 behind a zero window: the kernel does not date the close (no
    // retransmission of the FIN, only window probes): unknown in one census, never
    // guessed from the last data sent before the close...
    assert_eq!(p.lingered(KernelState::FinWait1), None);
    // ... and at least the time it has been followed in FIN_WAIT_1 by a census that
    // follows sockets by cookie (census --watch, the exporter, the guard).
    let mut tracker = AgeTracker::new();
    let query = CensusQuery::new().port(port);
    let first_sight = std::time::Instant::now();
    query.run_tracked(&mut tracker).unwrap();
    thread::sleep(Duration::from_millis(1_200));
    let followed = query.run_tracked(&mut tracker).unwrap();
    let l = followed
        .port(port)
        .unwrap()
        .lingered(KernelState::FinWait1)
        .unwrap();
    assert_eq!((l.sockets, l.at_least), (2, 2), "{l:?}");
    assert!(
        l.newest >= Duration::from_millis(1_150) && l.oldest <= first_sight.elapsed(),
        "followed for {:?}: {l:?}",
        first_sight.elapsed()
    );
    assert!(l.oldest <= piles.first_started.elapsed(), "{l:?}");

    let diagnosis = census.diagnosis();
    for state in ["CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2"] {
        let lines: Vec<_> = diagnosis
            .iter()
            .filter(|l| l.starts_with(&format!("{state}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "{state}: {diagnosis:#?}");
        assert!(
            lines[0].contains(&format!("on port {port}")),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("lingered") || lines[0].contains("age unknown"),
            "{}",
            lines[0]
        );
    }
    assert_eq!(
        diagnosis
            .iter()
            .filter(|l| !l.starts_with("ListenOverflows"))
            .count(),
        3,
        "two TIME_WAIT are churn, below the floor: {diagnosis:#?}"
    );
}

/// CLOSE_WAIT under 1 s keepalive probes, whose replies reset `tcpi_last_ack_recv`: a
/// single census says "at least" and never more than the time since the FIN; one that
/// follows the socket from just after the FIN counts the whole time.
#[test]
fn close_wait_under_keepalive_is_at_least_and_followed_by_cookie() {
    require!(Need::Tool("ss"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    SockRef::from(&server)
        .set_tcp_keepalive(&keepalive)
        .unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let fin = std::time::Instant::now();
    wait_until(SETTLE, "CLOSE_WAIT", || {
        let view = ss_here(port);
        (n(&view, "CLOSE_WAIT") == 1, view)
    });
    let query = CensusQuery::new().port(port);
    let mut tracker = AgeTracker::new();
    query.run_tracked(&mut tracker).unwrap();
    thread::sleep(Duration::from_millis(4_500));

    let single = query.run().unwrap();
    let since_fin = fin.elapsed();
    let l = single
        .port(port)
        .unwrap()
        .lingered(KernelState::CloseWait)
        .unwrap();
    assert_eq!(l.at_least, 1, "keepalive runs: a lower bound: {l:?}");
    assert!(l.oldest <= since_fin, "{l:?} > {since_fin:?}");
    assert!(
        l.oldest < Duration::from_millis(2_500),
        "the probes' replies reset the kernel's figure (else this test shows nothing): {l:?}"
    );
    let line = single.diagnosis().into_iter().next().unwrap_or_default();
    assert!(line.contains("lingered at least "), "{line}");

    let followed = query.run_tracked(&mut tracker).unwrap();
    let since_fin = fin.elapsed();
    let l = followed
        .port(port)
        .unwrap()
        .lingered(KernelState::CloseWait)
        .unwrap();
    assert!(
        l.oldest >= Duration::from_millis(4_400) && l.oldest <= since_fin,
        "followed from {since_fin:?} ago: {l:?}"
    );
    drop((client, server));
}

#[test]
fn loopback_ipv4_states_match_ss() {
    require!(Need::Tool("ss"));
    loopback_states_match_ss(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn loopback_ipv6_states_match_ss() {
    require!(Need::Tool("ss"));
    loopback_states_match_ss(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

fn namespace_census(pair: &NetPair, port: u16) -> Census {
    CensusQuery::new()
        .port(port)
        .netns(pair.server_ns.clone())
        .run()
        .unwrap()
}

fn assert_diagnosed(census: &Census, states: &[&str]) {
    let lines = census.diagnosis();
    for state in states {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{state}: "))),
            "no {state} line: {lines:#?}"
        );
    }
}

#[test]
fn syn_recv_fin_wait_1_and_closing_when_the_servers_packets_are_lost() {
    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let s = lost_server_packets();
    past_the_age_floor(s.made);
    assert_census_matches_ss(
        "lost server packets",
        || ss_view(s.pair.server_command("ss"), s.port),
        || census_view(namespace_census(&s.pair, s.port).port(s.port)),
    );
    let census = namespace_census(&s.pair, s.port);
    assert_eq!(census.netns(), Some(s.pair.server_ns.as_str()));
    assert_eq!(census.count(KernelState::SynRecv), 3);
    assert_eq!(census.orphans(), 2);
    let p = census.port(s.port).unwrap();
    assert_eq!(p.orphans_in(KernelState::Closing), 1);
    assert_eq!(p.orphans_in(KernelState::FinWait1), 1);
    assert_diagnosed(&census, &["SYN_RECV", "FIN_WAIT_1", "CLOSING"]);
    // Handshakes are dated by their SYN-ACK retransmissions; the others by tcp_info.
    for state in [
        KernelState::SynRecv,
        KernelState::FinWait1,
        KernelState::Closing,
    ] {
        assert!(p.lingered(state).is_some(), "no age for {state}");
    }
    // Nothing leaks into the caller's namespace.
    assert_eq!(
        Census::of_local_port(s.port)
            .unwrap()
            .count(KernelState::SynRecv),
        0
    );
}

#[test]
fn last_ack_when_the_client_vanishes() {
    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let s = vanished_client();
    past_the_age_floor(s.closed);
    assert_census_matches_ss(
        "vanished client",
        || ss_view(s.pair.server_command("ss"), s.port),
        || census_view(namespace_census(&s.pair, s.port).port(s.port)),
    );
    let census = namespace_census(&s.pair, s.port);
    assert_eq!(census.count(KernelState::LastAck), 2);
    assert_eq!(census.orphans(), 1);
    assert_diagnosed(&census, &["LAST_ACK"]);
    let line = census
        .diagnosis()
        .into_iter()
        .find(|l| l.starts_with("LAST_ACK"))
        .unwrap();
    assert!(
        line.contains("(1 orphaned)") && line.contains("the client is gone"),
        "{line}"
    );
}

/// Ages checked against when each socket entered its state: LAST_ACK from the server's
/// close (its FIN retransmitted into the void), never from the client's last packet,
/// which came earlier; in a single census and in one that follows the sockets.
#[test]
fn last_ack_is_dated_from_the_close_not_the_peers_last_packet() {
    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let s = vanished_client();
    // The client's FIN came before `closed`; wait until our FIN has been retransmitted
    // a few times (200 ms, 400 ms, 800 ms, … on this short path).
    thread::sleep(Duration::from_millis(3_000));
    let census = namespace_census(&s.pair, s.port);
    let since_close = s.closed.elapsed();
    let l = census
        .port(s.port)
        .unwrap()
        .lingered(KernelState::LastAck)
        .unwrap();
    assert_eq!(l.sockets, 2, "{l:?}");
    assert!(
        l.oldest <= since_close + Duration::from_millis(50),
        "LAST_ACK lingered {l:?}, but the close was {since_close:?} ago"
    );
    // A lower bound, short of the truth by at most the tail-loss probe that came before
    // the first retransmission timeout.
    assert!(
        l.newest + Duration::from_millis(700) >= since_close,
        "LAST_ACK lingered {l:?}, the close was {since_close:?} ago"
    );
    assert_eq!(l.at_least, 2, "{l:?}");
}

/// A listener with a backlog of 1 that never accepts, and six clients: its queue
/// overflows and the namespace's ListenOverflows counts the drops.
#[test]
fn a_full_accept_queue_and_listen_overflows() {
    require!(Need::Netns);
    let pair = NetPair::new();
    let server_ip = pair.server_ip;
    let listener = in_netns(&pair.server_ns, move || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::from((server_ip, 0)).into())?;
        socket.listen(1)?;
        Ok(socket)
    })
    .unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let port = addr.port();
    let fresh = namespace_census(&pair, port);
    assert_eq!(
        fresh.listen_overflows(),
        Some(0),
        "a new namespace starts at 0"
    );
    let _clients: Vec<Socket> = (0..6).map(|_| pair.start_connect(addr)).collect();
    wait_until(SETTLE, "a full accept queue and ListenOverflows", || {
        let census = namespace_census(&pair, port);
        let full = census
            .port(port)
            .and_then(|p| p.listen())
            .is_some_and(|q| q.full);
        (full && census.listen_overflows() > Some(0), census)
    });
    let census = namespace_census(&pair, port);
    let p = census.port(port).unwrap();
    let queue = p.listen().unwrap();
    assert_eq!(
        (queue.accept_queue, queue.backlog),
        (2, Some(1)),
        "{queue:?}"
    );
    assert_eq!(
        p.awaiting_accept(),
        2,
        "the queued connections have no descriptor"
    );
    let lines = census.diagnosis();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "LISTEN: port {port}: accept queue 2 over its backlog 1"
        ))),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ListenOverflows: ")),
        "{lines:#?}"
    );
}

/// `/proc/net/sockstat` says less than it seems: `orphan` is host-wide, `tw` counts
/// orphaned FIN_WAIT_2 too. The census keeps them apart.
#[test]
fn sockstat_orphan_is_host_wide_and_tw_counts_orphaned_fin_wait_2() {
    require!(Need::Netns, Need::Tool("ss"));
    let pair = NetPair::new();
    // In the server's namespace, over its loopback: one orphaned FIN_WAIT_1 (zero window)
    // and one orphaned FIN_WAIT_2. Nothing in TIME_WAIT.
    let (listener, conns) = in_netns(&pair.server_ns, || {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut conns = Vec::new();
        for small in [true, false] {
            let client = if small {
                small_window_client(addr)
            } else {
                TcpStream::connect(addr)?
            };
            conns.push((client, listener.accept()?.0));
        }
        Ok((listener, conns))
    })
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut clients = Vec::new();
    for (i, (client, server)) in conns.into_iter().enumerate() {
        if i == 0 {
            SockRef::from(&server).set_send_buffer_size(4096).unwrap();
            fill_send_buffer(&server);
        }
        drop(server);
        clients.push(client);
    }
    wait_until(SETTLE, "an orphaned FIN_WAIT_1 and FIN_WAIT_2", || {
        let view = ss_view(pair.server_command("ss"), port);
        let ok = n(&view, "FIN_WAIT_1") == 1 && n(&view, "FIN_WAIT_2") == 1 && view.orphans == 2;
        (ok, view)
    });
    let inside = in_netns(&pair.server_ns, SockStat::read).unwrap();
    let census = namespace_census(&pair, port);
    assert_eq!(census.count(KernelState::TimeWait), 0);
    assert_eq!(census.count(KernelState::FinWait2), 1);
    assert_eq!(census.orphans(), 2);
    assert_eq!(
        inside.time_wait, 1,
        "tw counts the orphaned FIN_WAIT_2: {inside:?}"
    );
    // The client's namespace has no socket at all, and still reads the orphan.
    let empty = in_netns(&pair.client_ns, SockStat::read).unwrap();
    assert_eq!((empty.inuse, empty.time_wait), (0, 0), "{empty:?}");
    assert!(empty.orphan >= 1, "orphan is host-wide: {empty:?}");
}

mod cli {
    //! The same piles, counted by the `tcp-hygiene` binary.

    use std::time::Instant;

    use super::*;
    use support::census::{json_view, loopback_connection};
    use support::tool::{self, census_json, json_port, UnprivilegedTool};

    fn loopback_json_matches_ss(ip: IpAddr) {
        let piles = loopback_piles(ip);
        past_the_age_floor(piles.close_wait_fin);
        let port = piles.port;
        let arg = port.to_string();
        assert_census_matches_ss(
            &format!("{ip} --json"),
            || ss_here(port),
            || json_view(json_port(&census_json(&["--port", &arg]), port)),
        );
        let json = census_json(&["--port", &arg]);
        assert_eq!(json["source"], "sock_diag");
        let p = json_port(&json, port);
        let pids: Vec<u64> = p["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["pid"].as_u64().unwrap())
            .collect();
        // Our sockets; a child another test forks holds copies until it execs.
        assert!(pids.contains(&u64::from(std::process::id())), "{pids:?}");
        let diagnosis: Vec<&str> = p["diagnosis"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        for state in ["CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2"] {
            assert!(
                diagnosis
                    .iter()
                    .any(|l| l.starts_with(&format!("{state}: "))),
                "{state}: {diagnosis:#?}"
            );
        }
        assert!(p["lingered_ms"]["CLOSE_WAIT"]["oldest"].as_u64().is_some());
        // The fallback source through the binary, too.
        assert_census_matches_ss(
            &format!("{ip} --json --source procfs"),
            || ss_here(port),
            || {
                json_view(json_port(
                    &census_json(&["--port", &arg, "--source", "procfs"]),
                    port,
                ))
            },
        );
    }

    #[test]
    fn loopback_ipv4_json_matches_ss() {
        require!(Need::Tool("ss"));
        loopback_json_matches_ss(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn loopback_ipv6_json_matches_ss() {
        require!(Need::Tool("ss"));
        loopback_json_matches_ss(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    fn namespace_json(pair: &NetPair, port: u16) -> serde_json::Value {
        let json = census_json(&["--netns", &pair.server_ns, "--port", &port.to_string()]);
        assert_eq!(json["netns"], pair.server_ns.as_str());
        json_port(&json, port).clone()
    }

    #[test]
    fn namespaces_json_matches_ss() {
        require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
        let lost = lost_server_packets();
        let vanished = vanished_client();
        past_the_age_floor(lost.made);
        for (what, pair, port, states) in [
            (
                "lost server packets",
                &lost.pair,
                lost.port,
                &["SYN_RECV", "FIN_WAIT_1", "CLOSING"][..],
            ),
            (
                "vanished client",
                &vanished.pair,
                vanished.port,
                &["LAST_ACK"][..],
            ),
        ] {
            assert_census_matches_ss(
                what,
                || ss_view(pair.server_command("ss"), port),
                || json_view(&namespace_json(pair, port)),
            );
            let p = namespace_json(pair, port);
            for state in states {
                let lines = p["diagnosis"].as_array().unwrap();
                assert!(
                    lines
                        .iter()
                        .any(|l| l.as_str().unwrap().starts_with(&format!("{state}: "))),
                    "{what}: no {state} line in {lines:#?}"
                );
            }
        }
    }

    /// Run by an unprivileged user, the census cannot read root's `/proc/PID/fd`: the
    /// owners are unknown, which is not an error.
    #[test]
    fn unreadable_owners_are_unknown_not_an_error() {
        require!(Need::Root);
        let (listener, _client, _server) = loopback_connection("127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let unprivileged = UnprivilegedTool::new();
        let out = unprivileged.run(&["census", "--json", "--port", &port.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let p = json_port(&json, port);
        assert_eq!(p["processes"], serde_json::json!([]));
        assert_eq!(
            p["owner_unknown"], 2,
            "the listener and the accepted socket: {p}"
        );
        assert_eq!(p["states"]["ESTABLISHED"], 1);
        // As root, the same census finds this process.
        let root = json_port(&census_json(&["--port", &port.to_string()]), port).clone();
        assert_eq!(root["owner_unknown"], 0, "{root}");
    }

    #[test]
    fn watch_takes_a_census_every_interval() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let started = Instant::now();
        let text = tool::stdout(&[
            "census", "--json", "--port", &port, "--watch", "0.3", "--count", "3",
        ]);
        let took = started.elapsed();
        let samples: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(samples.len(), 3, "{text}");
        assert!(
            samples
                .iter()
                .all(|s| s["ports"][0]["states"]["LISTEN"] == 1),
            "{text}"
        );
        assert!(
            took >= Duration::from_millis(600),
            "3 samples 0.3 s apart took {took:?}"
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn text_output_has_a_line_per_port_and_the_diagnosis() {
        require!(Need::Tool("ss"));
        let piles = loopback_piles(IpAddr::V4(Ipv4Addr::LOCALHOST));
        past_the_age_floor(piles.close_wait_fin);
        let text = tool::stdout(&["census", "--port", &piles.port.to_string()]);
        let port_line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&piles.port.to_string()))
            .unwrap_or_else(|| panic!("no line for the port:\n{text}"));
        for part in [
            "LISTEN 1",
            "ESTABLISHED 2",
            "CLOSE_WAIT 3",
            "FIN_WAIT_1 2",
            "FIN_WAIT_2 2",
            "TIME_WAIT 2",
            "orphans 2",
            "accept queue 0/",
        ] {
            assert!(port_line.contains(part), "{part:?} missing: {port_line}");
        }
        assert!(
            port_line.contains(&std::process::id().to_string()),
            "{port_line}"
        );
        assert!(
            text.contains("\nDiagnosis:\n  CLOSE_WAIT: 3 on port"),
            "{text}"
        );
    }

    /// A client namespace with 300 TIME_WAIT on as many ephemeral ports (this side closed
    /// first) and a pool of 20 connections its server closed: two lines, one per remote
    /// endpoint, not one per ephemeral port; a diagnosis in the client's words for the
    /// pool's CLOSE_WAIT, none for TIME_WAIT below its floor; counts equal to `ss`.
    #[test]
    fn a_clients_piles_read_at_a_glance() {
        require!(Need::Netns, Need::Tool("ss"));
        let pair = NetPair::new();
        let churn = pair.listen();
        churn.set_nonblocking(false).unwrap();
        let pool_server = pair.listen();
        pool_server.set_nonblocking(false).unwrap();
        let (churn_addr, pool_addr) = (
            churn.local_addr().unwrap(),
            pool_server.local_addr().unwrap(),
        );
        for _ in 0..300 {
            let client = pair.connect(churn_addr);
            let (mut server, _) = churn.accept().unwrap();
            drop(client);
            server.set_nonblocking(false).unwrap();
            assert_eq!(std::io::Read::read(&mut server, &mut [0u8; 8]).unwrap(), 0);
        }
        let pool: Vec<TcpStream> = (0..20)
            .map(|_| {
                let client = pair.connect(pool_addr);
                drop(pool_server.accept().unwrap().0);
                client
            })
            .collect();
        let made = std::time::Instant::now();
        let client_ss = |filter: &str| {
            let mut ss = std::process::Command::new("ip");
            ss.args(["netns", "exec", &pair.client_ns, "ss", "-Htan"]);
            ss.args(filter.split(' '));
            support::ss_output(ss).len() as u64
        };
        let time_wait = format!("state time-wait dport = :{}", churn_addr.port());
        let close_wait = format!("state close-wait dport = :{}", pool_addr.port());
        wait_until(SETTLE, "300 TIME_WAIT and 20 CLOSE_WAIT", || {
            let seen = (client_ss(&time_wait), client_ss(&close_wait));
            (seen == (300, 20), seen)
        });
        past_the_age_floor(made);

        let ns = pair.client_ns.as_str();
        let text = tool::stdout(&["census", "--netns", ns]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 8, "{} lines:\n{text}", lines.len());
        assert!(
            lines[1].starts_with("total 320 CLOSE_WAIT 20 TIME_WAIT 300 | orphans 0 | 0 server ports, 2 remote endpoints"),
            "the host's totals first:\n{text}"
        );
        // Another namespace's counters do not count from boot.
        assert_eq!(
            lines[2], "ListenOverflows 0, ListenDrops 0 since the namespace was created",
            "{text}"
        );
        assert!(!text.contains("since boot"), "{text}");
        assert!(
            lines.contains(&format!("→ {churn_addr}  TIME_WAIT 300").as_str()),
            "{text}"
        );
        let pool_line = format!("→ {pool_addr}  CLOSE_WAIT 20 | {} ", std::process::id());
        assert!(
            lines.iter().any(|l| l.starts_with(&pool_line)),
            "{pool_line:?} in\n{text}"
        );
        let diagnosis: Vec<&&str> = lines.iter().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(diagnosis.len(), 1, "{text}");
        assert!(
            diagnosis[0].starts_with(&format!("  CLOSE_WAIT: 20 to {pool_addr}, lingered"))
                && diagnosis[0].contains("connections this host opened")
                && diagnosis[0].contains(&format!("--remote-port {}", pool_addr.port())),
            "{}",
            diagnosis[0]
        );
        assert!(!text.contains(" on port "), "{text}");

        // --top 1: the biggest group and a count of the rest.
        let top = tool::stdout(&["census", "--netns", ns, "--top", "1"]);
        assert!(
            top.contains(&format!("→ {churn_addr}  TIME_WAIT 300\n")),
            "{top}"
        );
        assert!(
            top.contains("… 1 more groups with 20 sockets (--top N, --all)"),
            "{top}"
        );
        assert!(!top.contains(&pool_line), "{top}");

        // JSON: no server port, the two remote endpoints, as ss counts them.
        let json = census_json(&["--netns", ns]);
        assert_eq!(json["ports"], serde_json::json!([]), "{json}");
        let remote = |addr: SocketAddr| {
            json["remotes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["remote"] == addr.to_string())
                .unwrap_or_else(|| panic!("no {addr} in {json}"))
                .clone()
        };
        assert_eq!(
            remote(churn_addr)["states"]["TIME_WAIT"],
            client_ss(&time_wait)
        );
        assert_eq!(
            remote(pool_addr)["states"]["CLOSE_WAIT"],
            client_ss(&close_wait)
        );
        assert_eq!(json["totals"]["sockets"], 320);
        drop(pool);
    }

    #[test]
    fn usage_errors_exit_2() {
        let out = tool::run(&[
            "reap",
            "--port",
            "1",
            "--idle-ms",
            "5",
            "--state",
            "established",
        ]);
        assert_eq!(out.status.code(), Some(2));
        let out = tool::run(&["census", "--count", "2"]);
        assert_eq!(out.status.code(), Some(2), "--count needs --watch");
        let out = tool::run(&["census", "--netns", "tcp-hygiene-no-such-namespace"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("tcp-hygiene-no-such-namespace"), "{stderr}");
    }
}
