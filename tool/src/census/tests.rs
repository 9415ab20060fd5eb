//! A census built from made-up dumps: grouping, orphans, lingering, diagnosis, JSON.
//! Real sockets are counted in `tests/census.rs`.

use std::time::Duration;

use std::net::SocketAddr;

use super::*;
use owners::Owners;
use KernelState::*;

const PORT: u16 = 8080;

fn socket(state: KernelState, inode: u64, lingered_ms: Option<u64>) -> SocketRecord {
    SocketRecord {
        state,
        local: SocketAddr::from(([127, 0, 0, 1], PORT)),
        peer: SocketAddr::from(([127, 0, 0, 1], 50_000)),
        inode,
        recv_queue: 0,
        backlog: None,
        lingered: lingered_ms.map(Duration::from_millis),
        lower_bound: false,
        upper_bound: None,
        cookie: None,
        interface: 0,
    }
}

/// One socket of every state a census diagnoses, plus the ones it does not.
fn every_state() -> Vec<SocketRecord> {
    let mut listener = socket(Listen, 10, None);
    listener.peer = SocketAddr::from(([0, 0, 0, 0], 0));
    listener.recv_queue = 3;
    listener.backlog = Some(2);
    vec![
        listener,
        socket(Established, 11, Some(5)),
        socket(Established, 0, Some(5)), // waiting to be accepted
        socket(SynRecv, 0, Some(3_000)),
        socket(SynSent, 12, Some(1_500)),
        socket(CloseWait, 13, Some(1_500)),
        socket(CloseWait, 14, Some(9_000)),
        socket(CloseWait, 15, Some(4_000)),
        socket(CloseWait, 0, Some(100)), // the client gave up before accept
        socket(LastAck, 0, Some(2_000)),
        socket(FinWait1, 16, Some(2_000)),
        socket(FinWait2, 17, Some(70_000)),
        socket(FinWait2, 0, Some(3_000)), // orphaned, in a time-wait slot
        socket(Closing, 0, None),
        socket(TimeWait, 0, Some(59_000)),
    ]
}

/// Linux's default ephemeral range.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

fn build(sockets: &[SocketRecord]) -> Census {
    Census::build(sockets, None, &EPHEMERAL)
}

/// A connection this host opened from ephemeral port `local_port` to `remote`.
fn client(state: KernelState, local_port: u16, remote: &str, lingered_ms: u64) -> SocketRecord {
    SocketRecord {
        local: SocketAddr::from(([10, 0, 0, 1], local_port)),
        peer: remote.parse().unwrap(),
        ..socket(state, u64::from(local_port), Some(lingered_ms))
    }
}

#[test]
fn counts_orphans_and_connections_waiting_for_accept() {
    let census = build(&every_state());
    let port = census.port(PORT).unwrap();
    assert_eq!(census.count(CloseWait), 4);
    assert_eq!(census.count(Listen), 1);
    assert_eq!(census.total(), 14, "listeners are not connections");
    // LAST_ACK, orphaned FIN_WAIT_2, CLOSING; never TIME_WAIT or an unaccepted socket.
    assert_eq!(census.orphans(), 3);
    assert_eq!(port.orphans_in(FinWait2), 1);
    assert_eq!(port.awaiting_accept(), 2);
    assert_eq!(port.awaiting_accept_in(CloseWait), 1);
    // No owner lookup: every socket with a descriptor has an unknown owner.
    assert_eq!(port.owner_unknown(), 8);
    assert!(port.processes().is_empty());
    let queue = port.listen().unwrap();
    assert_eq!(
        (queue.accept_queue, queue.backlog, queue.full),
        (3, Some(2), true)
    );
}

#[test]
fn lingering_per_pile() {
    let census = build(&every_state());
    let port = census.port(PORT).unwrap();
    let close_wait = port.lingered(CloseWait).unwrap();
    assert_eq!(close_wait.sockets, 4);
    assert_eq!(close_wait.newest, Duration::from_millis(100));
    assert_eq!(close_wait.median, Duration::from_millis(4_000));
    assert_eq!(close_wait.oldest, Duration::from_millis(9_000));
    assert_eq!(port.lingered(Closing), None);
    assert_eq!(port.lingered(Listen), None);
}

#[test]
fn every_unusual_state_gets_a_line_that_starts_with_its_name() {
    let census = build(&every_state());
    let lines = census.diagnosis();
    for state in [
        SynRecv, SynSent, CloseWait, LastAck, FinWait1, FinWait2, Closing,
    ] {
        let prefix = format!("{state}: ");
        let found: Vec<_> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(found.len(), 1, "{state}: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("ESTABLISHED")));
    // One TIME_WAIT is churn, not a pile.
    assert!(
        !lines.iter().any(|l| l.starts_with("TIME_WAIT")),
        "{lines:#?}"
    );
    // LISTEN only because its queue is full.
    let listen: Vec<_> = lines.iter().filter(|l| l.starts_with("LISTEN")).collect();
    assert_eq!(listen.len(), 1, "{lines:#?}");
    assert!(listen[0].contains("accept queue 3 over its backlog 2"));

    let close_wait = lines.iter().find(|l| l.starts_with("CLOSE_WAIT")).unwrap();
    assert!(
        close_wait
            .starts_with("CLOSE_WAIT: 4 on port 8080 (3 over 1.0 s), lingered 100 ms to 9.0 s (median 4.0 s): the clients closed"),
        "{close_wait}"
    );
    assert!(close_wait.contains("1 were never accepted"), "{close_wait}");
    assert!(close_wait.contains("tcp-hygiene reap --port 8080 --idle-ms"));
    let fin_wait_2 = lines.iter().find(|l| l.starts_with("FIN_WAIT_2")).unwrap();
    assert!(fin_wait_2.contains("(1 orphaned)"), "{fin_wait_2}");
    assert!(
        fin_wait_2.contains("the server closed its side"),
        "{fin_wait_2}"
    );
    assert!(fin_wait_2.contains("The 1 orphaned end after tcp_fin_timeout; the 1 a process"));
    let closing = lines.iter().find(|l| l.starts_with("CLOSING")).unwrap();
    assert!(closing.contains("age unknown"), "{closing}");
}

#[test]
fn a_quiet_port_has_no_diagnosis() {
    let census = build(&[socket(Listen, 1, None), socket(Established, 2, Some(1))]);
    assert!(census.diagnosis().is_empty());
}

/// Churn: sockets passing through the closing states for milliseconds, and TIME_WAIT
/// below its floor, get no line; the same pile over the floor does.
#[test]
fn churn_stays_quiet_until_the_floors() {
    let mut sockets = vec![socket(Listen, 1, None)];
    sockets.extend((0..59).map(|i| socket(CloseWait, 100 + i, Some(i % 5))));
    sockets.extend((0..40).map(|i| socket(FinWait2, 0, Some(i * 20))));
    sockets.extend((0..999).map(|_| socket(TimeWait, 0, Some(30_000))));
    assert!(
        build(&sockets).diagnosis().is_empty(),
        "{:#?}",
        build(&sockets).diagnosis()
    );
    // One CLOSE_WAIT over a second, and the thousandth TIME_WAIT.
    sockets.push(socket(CloseWait, 99, Some(1_001)));
    sockets.push(socket(TimeWait, 0, Some(30_000)));
    let lines = build(&sockets).diagnosis();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("CLOSE_WAIT: 60 on port 8080 (1 over 1.0 s), lingered 0 ms to 1.0 s"),
        "{lines:#?}"
    );
    assert!(
        lines[1]
            .starts_with("TIME_WAIT: 1000 on port 8080, lingered 30.0 s: the server closed first"),
        "{lines:#?}"
    );
}

/// Connections this host opened are grouped by the remote endpoint, whatever their
/// ephemeral local ports, with the client's wording and a --remote-port hint.
#[test]
fn client_piles_by_remote_endpoint() {
    let mut sockets = vec![socket(Listen, 1, None), socket(Established, 2, Some(5))];
    sockets.extend((0..40).map(|i| client(CloseWait, 40_000 + i, "10.0.0.5:5432", 12_000)));
    sockets.extend((0..3).map(|i| client(Established, 41_000 + i, "10.0.0.5:5432", 10)));
    sockets.extend((0..1500).map(|i| client(TimeWait, 42_000 + i, "10.0.0.6:80", 20_000)));
    sockets.push(client(TimeWait, 50_000, "10.0.0.7:80", 20_000));
    let census = build(&sockets);
    assert_eq!(census.ports().count(), 1, "the listening port alone");
    assert_eq!(census.remotes().count(), 3);
    assert_eq!(census.count(CloseWait), 40);
    assert_eq!(census.sockets(), 2 + 40 + 3 + 1500 + 1);
    let pool = census.remote("10.0.0.5:5432".parse().unwrap()).unwrap();
    assert_eq!((pool.side(), pool.port()), (Side::Client, 5432));
    assert_eq!((pool.count(CloseWait), pool.count(Established)), (40, 3));
    assert_eq!(pool.listen(), None);
    // The biggest group first.
    let sizes: Vec<u64> = census.groups().iter().map(|g| g.sockets()).collect();
    assert_eq!(sizes, [1500, 43, 2, 1]);

    let lines = census.diagnosis();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let close_wait = lines.iter().find(|l| l.starts_with("CLOSE_WAIT")).unwrap();
    assert!(
        close_wait.starts_with("CLOSE_WAIT: 40 to 10.0.0.5:5432, lingered 12.0 s: connections this host opened to 10.0.0.5:5432 that the server closed"),
        "{close_wait}"
    );
    assert!(
        close_wait.contains("reap --remote-port 5432 --idle-ms 60000"),
        "{close_wait}"
    );
    assert!(!close_wait.contains("--port"), "{close_wait}");
    let time_wait = lines.iter().find(|l| l.starts_with("TIME_WAIT")).unwrap();
    assert!(
        time_wait.starts_with("TIME_WAIT: 1500 to 10.0.0.6:80"),
        "{time_wait}"
    );
    assert!(time_wait.contains("ephemeral range"), "{time_wait}");

    let json = serde_json::to_value(&census).unwrap();
    let remotes = json["remotes"].as_array().unwrap();
    assert_eq!(remotes[0]["remote"], "10.0.0.5:5432");
    assert_eq!(remotes[0]["states"]["CLOSE_WAIT"], 40);
    assert_eq!(remotes[0]["diagnosis"].as_array().unwrap().len(), 1);
    assert!(remotes[0].get("port").is_none() && remotes[0].get("listen").is_none());
    assert_eq!(json["ports"][0]["port"], 8080);
    assert_eq!(json["totals"]["sockets"], 1546);
    assert_eq!(json["totals"]["states"]["TIME_WAIT"], 1501);
}

/// A local port outside the ephemeral range is a server's even once its listener is
/// gone; one inside it with a listener too.
#[test]
fn the_side_of_a_port() {
    let gone_listener = socket(CloseWait, 5, Some(1));
    let mut ephemeral_listener = socket(Listen, 6, None);
    ephemeral_listener.local.set_port(40_000);
    let mut accepted = socket(Established, 7, Some(1));
    accepted.local.set_port(40_000);
    let census = build(&[gone_listener, ephemeral_listener, accepted]);
    assert_eq!(
        census.ports().map(|p| p.port()).collect::<Vec<_>>(),
        [8080, 40_000]
    );
    assert_eq!(census.remotes().count(), 0);
}

/// Which process holds how many of a group's sockets, by state: the pre-fork worker with
/// the pile first.
#[test]
fn counts_by_owning_process() {
    let owners = Owners::from_pairs(&[
        (1, 100, "nginx"),
        (1, 101, "nginx"),
        (2, 100, "nginx"),
        (3, 101, "nginx"),
        (4, 101, "nginx"),
        (5, 101, "nginx"),
    ]);
    let sockets = [
        socket(Listen, 1, None),
        socket(Established, 2, Some(1)),
        socket(CloseWait, 3, Some(5_000)),
        socket(CloseWait, 4, Some(5_000)),
        socket(CloseWait, 5, Some(5_000)),
    ];
    let census = Census::build(&sockets, Some(&owners), &EPHEMERAL);
    let port = census.port(PORT).unwrap();
    let holders: Vec<(u32, u64, u64)> = port
        .by_process()
        .iter()
        .map(|p| (p.process.pid, p.sockets(), p.count(CloseWait)))
        .collect();
    assert_eq!(holders, [(101, 4, 3), (100, 2, 0)]);
    let json = serde_json::to_value(port).unwrap();
    assert_eq!(
        json["by_process"][0],
        serde_json::json!({"pid": 101, "command": "nginx", "sockets": 4,
                           "states": {"LISTEN": 1, "CLOSE_WAIT": 3}})
    );
}

#[test]
fn json_shape() {
    let mut census = build(&every_state());
    census.source = Some(Source::SockDiag);
    census.listen_counters = Some(ListenCounters {
        overflows: 2,
        drops: 3,
    });
    let json = serde_json::to_value(&census).unwrap();
    let port = &json["ports"][0];
    assert_eq!(port["port"], 8080);
    assert_eq!(port["states"]["CLOSE_WAIT"], 4);
    assert_eq!(port["states"]["FIN_WAIT_2"], 2);
    assert_eq!(port["states"]["LISTEN"], 1);
    assert_eq!(port["states"].as_object().unwrap().len(), 10);
    assert_eq!(port["orphans"], 3);
    assert_eq!(port["processes"], serde_json::json!([]));
    assert_eq!(port["lingered_ms"]["CLOSE_WAIT"]["oldest"], 9000);
    assert_eq!(port["listen"]["backlog"], 2);
    assert_eq!(port["diagnosis"].as_array().unwrap().len(), 8);
    assert_eq!(json["source"], "sock_diag");
    assert_eq!(json["listen_overflows"], 2);
    let host = json["diagnosis"].as_array().unwrap();
    assert!(host[0].as_str().unwrap().starts_with("ListenOverflows: 2"));
}

/// Every key of the document, in order, with `null` for what was not read.
#[test]
fn an_empty_census() {
    assert_eq!(
        serde_json::to_string(&Census::default()).unwrap(),
        "{\"totals\":{\"sockets\":0,\"states\":{},\"orphans\":0},\"ports\":[],\"remotes\":[],\"source\":null,\"fallback_reason\":null,\"netns\":null,\
         \"listen_overflows\":null,\"listen_drops\":null,\"diagnosis\":[]}"
    );
}

/// The keys of a port in order, and the states in the census's order (not by name).
#[test]
fn port_document_order() {
    let census = build(&every_state());
    let text = serde_json::to_string(census.port(PORT).unwrap()).unwrap();
    let keys = [
        "\"port\"",
        "\"states\"",
        "\"orphans\"",
        "\"processes\"",
        "\"by_process\"",
        "\"diagnosis\"",
        "\"owner_unknown\"",
        "\"awaiting_accept\"",
        "\"lingered_ms\"",
        "\"listen\"",
    ];
    let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(
        text.contains("\"states\":{\"LISTEN\":1,\"SYN_SENT\":1,\"SYN_RECV\":1,\"ESTABLISHED\":2,"),
        "{text}"
    );
}

#[test]
fn display_lists_states_in_order() {
    let census = build(&every_state());
    assert_eq!(
        census.to_string(),
        "LISTEN=1 SYN_SENT=1 SYN_RECV=1 ESTABLISHED=2 CLOSE_WAIT=4 LAST_ACK=1 FIN_WAIT_1=1 \
         FIN_WAIT_2=2 CLOSING=1 TIME_WAIT=1"
    );
    assert_eq!(Census::default().to_string(), "none");
}

/// Under keepalive a CLOSE_WAIT age is a lower bound that the probes' replies keep low:
/// churn (its last data a moment ago) stays quiet; a pile whose last data is old is
/// diagnosed, its age said to be "at least".
#[test]
fn a_lower_bound_under_the_floor_is_diagnosed_when_the_pile_may_be_old() {
    let under_keepalive = |lower_ms: u64, upper_ms: u64| SocketRecord {
        lower_bound: true,
        upper_bound: Some(Duration::from_millis(upper_ms)),
        ..socket(CloseWait, 7, Some(lower_ms))
    };
    let churn = build(&[under_keepalive(500, 600)]);
    assert!(churn.diagnosis().is_empty(), "{:#?}", churn.diagnosis());
    let pile = build(&[under_keepalive(500, 30_000)]);
    let lines = pile.diagnosis();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("CLOSE_WAIT: 1 on port 8080, lingered at least 500 ms: "),
        "{}",
        lines[0]
    );
}
