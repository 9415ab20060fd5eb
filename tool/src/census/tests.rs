//! A census built from made-up dumps: grouping, orphans, lingering, diagnosis, JSON.
//! Real sockets are counted in `tests/census.rs`.

use std::time::Duration;

use std::net::SocketAddr;

use super::*;
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
        socket(SynRecv, 0, Some(300)),
        socket(SynSent, 12, Some(1_000)),
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

#[test]
fn counts_orphans_and_connections_waiting_for_accept() {
    let census = Census::build(&every_state(), None);
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
    let census = Census::build(&every_state(), None);
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
    let census = Census::build(&every_state(), None);
    let lines = census.diagnosis();
    for state in [
        SynRecv, SynSent, CloseWait, LastAck, FinWait1, FinWait2, Closing, TimeWait,
    ] {
        let prefix = format!("{state}: ");
        let found: Vec<_> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(found.len(), 1, "{state}: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("ESTABLISHED")));
    // LISTEN only because its queue is full.
    let listen: Vec<_> = lines.iter().filter(|l| l.starts_with("LISTEN")).collect();
    assert_eq!(listen.len(), 1, "{lines:#?}");
    assert!(listen[0].contains("accept queue 3 over its backlog 2"));

    let close_wait = lines.iter().find(|l| l.starts_with("CLOSE_WAIT")).unwrap();
    assert!(
        close_wait
            .starts_with("CLOSE_WAIT: 4 on port 8080, lingered 100 ms to 9.0 s (median 4.0 s): "),
        "{close_wait}"
    );
    assert!(close_wait.contains("1 were never accepted"), "{close_wait}");
    assert!(close_wait.contains("tcp-hygiene reap --port 8080 --idle-ms"));
    let fin_wait_2 = lines.iter().find(|l| l.starts_with("FIN_WAIT_2")).unwrap();
    assert!(fin_wait_2.contains("(1 orphaned)"), "{fin_wait_2}");
    assert!(fin_wait_2.contains("The 1 orphaned end after tcp_fin_timeout; the 1 a process"));
    let closing = lines.iter().find(|l| l.starts_with("CLOSING")).unwrap();
    assert!(closing.contains("age unknown"), "{closing}");
}

#[test]
fn a_quiet_port_has_no_diagnosis() {
    let census = Census::build(
        &[socket(Listen, 1, None), socket(Established, 2, Some(1))],
        None,
    );
    assert!(census.diagnosis().is_empty());
}

#[test]
fn json_shape() {
    let mut census = Census::build(&every_state(), None);
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
    assert_eq!(port["diagnosis"].as_array().unwrap().len(), 9);
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
        "{\"ports\":[],\"source\":null,\"fallback_reason\":null,\"netns\":null,\
         \"listen_overflows\":null,\"listen_drops\":null,\"diagnosis\":[]}"
    );
}

/// The keys of a port in order, and the states in the census's order (not by name).
#[test]
fn port_document_order() {
    let census = Census::build(&every_state(), None);
    let text = serde_json::to_string(census.port(PORT).unwrap()).unwrap();
    let keys = [
        "\"port\"",
        "\"states\"",
        "\"orphans\"",
        "\"processes\"",
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
    let census = Census::build(&every_state(), None);
    assert_eq!(
        census.to_string(),
        "LISTEN=1 SYN_SENT=1 SYN_RECV=1 ESTABLISHED=2 CLOSE_WAIT=4 LAST_ACK=1 FIN_WAIT_1=1 \
         FIN_WAIT_2=2 CLOSING=1 TIME_WAIT=1"
    );
    assert_eq!(Census::default().to_string(), "none");
}
