//! The `metrics` feature and the event hook: what they report about real loopback
//! connections agrees with `Stats` and with the kernel's view (`ss`), and the metrics
//! example serves a Prometheus scrape that shows a reaped `CLOSE_WAIT`.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{
    Builder, CloseReason, ConnectionEvent, ConnectionEventKind, ConnectionId, ConnectionState,
    TcpListener,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLOSE_WAIT: Duration = Duration::from_millis(300);

/// A listener on 127.0.0.1 whose metrics go to a recorder of its own (the recorder in
/// place when a listener is made is the one it reports to).
async fn recorded_listener(builder: &Builder) -> (TcpListener, Snapshotter) {
    support::trace_init();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let tokio = tokio::net::TcpListener::from_std(std).unwrap();
    let listener = metrics::with_local_recorder(&recorder, || builder.wrap(tokio)).unwrap();
    (listener, snapshotter)
}

/// One snapshot (the debugging recorder's snapshots reset what they read), by name and
/// the value of the label that is not `listener`.
struct Recorded(HashMap<(String, String), DebugValue>);

impl Recorded {
    fn take(snapshotter: &Snapshotter, listener: SocketAddr) -> Self {
        let mut map = HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<_> = key.labels().collect();
            assert!(
                labels
                    .iter()
                    .any(|l| l.key() == "listener" && l.value() == listener.to_string()),
                "{key:?} lacks listener={listener}"
            );
            let other = labels
                .iter()
                .find(|l| l.key() != "listener")
                .map_or(String::new(), |l| l.value().to_owned());
            map.insert((key.name().to_owned(), other), value);
        }
        Self(map)
    }

    fn get(&self, name: &str, label: &str) -> &DebugValue {
        self.0
            .get(&(name.to_owned(), label.to_owned()))
            .unwrap_or_else(|| panic!("no metric {name}{{{label}}}"))
    }

    fn counter(&self, name: &str, label: &str) -> u64 {
        match self.get(name, label) {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, label: &str) -> f64 {
        match self.get(name, label) {
            DebugValue::Gauge(v) => v.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        match self.get(name, "") {
            DebugValue::Histogram(v) => v.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

/// Five connections, each ending its own way; then a drain. Every counter and gauge
/// equals what `Stats` says, the histograms hold one value per event, and `ss` agrees on
/// what is left.
#[tokio::test]
async fn metrics_agree_with_stats_and_the_kernel() {
    require!(Need::Tool("ss"));
    let (listener, snapshotter) =
        recorded_listener(Builder::new().close_wait_timeout(CLOSE_WAIT)).await;
    let addr = listener.local_addr().unwrap();
    let port = addr.port();

    // 1. The peer leaves and the handler never closes: CLOSE_WAIT, reaped.
    let (mut left, held) = support::connect_pair(&listener).await;
    left.shutdown().await.unwrap();
    // 2. The peer resets.
    let (reset, _reset_server) = support::connect_pair(&listener).await;
    support::reset(reset);
    // 3. The peer closes, the application reads EOF and drops: ended by the peer.
    let (mut polite, mut server) = support::connect_pair(&listener).await;
    polite.shutdown().await.unwrap();
    assert_eq!(server.read(&mut [0u8; 8]).await.unwrap(), 0);
    drop(server);
    // 4. The application closes first: ended by the application.
    let (mut dropped_client, dropped) = support::connect_pair(&listener).await;
    drop(dropped);
    assert_eq!(dropped_client.read(&mut [0u8; 8]).await.unwrap(), 0);
    // 5. Still open.
    let (_open_client, open) = support::connect_pair(&listener).await;

    let mut eof = [0u8; 8];
    let n = tokio::time::timeout(CLOSE_WAIT * 10, left.read(&mut eof))
        .await
        .expect("the CLOSE_WAIT socket is closed in time")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(held.close_reason(), Some(CloseReason::CloseWaitTimeout));
    wait_for(Duration::from_secs(2), "the reset is seen", || {
        listener.stats().closed(CloseReason::ResetByPeer) == 1
    })
    .await;
    wait_for(Duration::from_secs(2), "no CLOSE_WAIT left", || {
        ss_count(port, "close-wait") == 0
    })
    .await;
    drop(held);

    let stats = listener.stats();
    let m = Recorded::take(&snapshotter, addr);
    assert_eq!(m.counter("tcp_hygiene_connections_accepted_total", ""), 5);
    assert_eq!(stats.accepted, 5);
    for reason in CloseReason::all() {
        assert_eq!(
            m.counter("tcp_hygiene_connections_closed_total", reason.as_str()),
            stats.closed(reason),
            "{reason}"
        );
    }
    assert_eq!(stats.closed(CloseReason::CloseWaitTimeout), 1);
    assert_eq!(m.counter("tcp_hygiene_connections_closed_total", "peer"), 1);
    assert_eq!(
        m.counter("tcp_hygiene_connections_closed_total", "application"),
        1
    );
    for state in ConnectionState::all() {
        assert_eq!(
            m.gauge("tcp_hygiene_connections_open", state.as_str()),
            stats.open_in(state) as f64,
            "{state}"
        );
    }
    // The kernel's view of what is held: one established connection, the fifth. (The
    // reset one's stream is held too, but its socket is gone from the kernel.)
    assert_eq!(stats.open, 2);
    assert_eq!(ss_count(port, "established"), 1);
    let live = listener.connections();
    assert_eq!(live.len() as u64, stats.open);
    let fifth = live
        .iter()
        .find(|c| c.id == open.handle().id())
        .expect("the open connection is listed");
    assert_eq!(fifth.state, ConnectionState::Open);
    assert_eq!(
        fifth.tcp_info.map(|i| i.state),
        Some(tcp_hygiene::KernelState::Established)
    );
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&live).unwrap();
        let fifth = json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == u64::from(open.handle().id()))
            .unwrap();
        assert_eq!(fifth["state"], "open");
        assert_eq!(fifth["tcp_info"]["state"], "ESTABLISHED");
        assert!(fifth["age_seconds"].as_f64().unwrap() > 0.0);
        let stats_json = serde_json::to_value(&stats).unwrap();
        assert_eq!(stats_json["accepted"], stats.accepted);
        assert_eq!(
            stats_json["closed_by_reason"]["close_wait_timeout"],
            stats.closed(CloseReason::CloseWaitTimeout)
        );
    }
    let durations = m.histogram("tcp_hygiene_connection_duration_seconds");
    assert_eq!(durations.len() as u64, stats.released, "{durations:?}");
    // CLOSE_WAIT ended: the reaped one after the timeout; the polite one at once; the
    // reset one when the kernel ended it. The reaped one is the longest.
    let close_waits = m.histogram("tcp_hygiene_close_wait_seconds");
    let longest = close_waits.iter().copied().fold(0.0, f64::max);
    assert!(
        (CLOSE_WAIT.as_secs_f64()..CLOSE_WAIT.as_secs_f64() * 2.0).contains(&longest),
        "{close_waits:?}"
    );
    // Three FINs reached the kernel watcher before anyone else saw them (1, 3 and the
    // application's EOF may race; at least the stuck one's): each within a jiffy or few.
    let fin_detect = m.histogram("tcp_hygiene_fin_detect_seconds");
    assert!(!fin_detect.is_empty());
    assert!(fin_detect.iter().all(|s| *s < 0.05), "{fin_detect:?}");

    // A drain: the report, as gauges.
    let controller = listener.controller();
    let report = tokio::spawn(async move {
        controller
            .drain(Duration::from_millis(50), Duration::from_millis(300))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(open);
    let report = report.await.unwrap();
    let m = Recorded::take(&snapshotter, addr);
    for (fate, n) in [
        ("connections", report.connections),
        ("finished", report.finished),
        ("idle_closed", report.idle_closed),
        ("forced", report.forced),
    ] {
        assert_eq!(
            m.gauge("tcp_hygiene_drain_connections", fate),
            n as f64,
            "{fate}"
        );
    }
    assert!(report.connections >= 1, "{report:?}");
}

/// A client that never sends a byte is closed at `first_byte_timeout`; one that does is
/// not. The counter, `Stats` and `ss` agree.
#[tokio::test]
async fn first_byte_timeouts_are_counted() {
    require!(Need::Tool("ss"));
    let (listener, snapshotter) =
        recorded_listener(Builder::new().first_byte_timeout(Duration::from_millis(300))).await;
    let addr = listener.local_addr().unwrap();
    let (mut silent, silent_server) = support::connect_pair(&listener).await;
    let (mut talker, mut talker_server) = support::connect_pair(&listener).await;
    talker.write_all(b"hi").await.unwrap();
    assert_eq!(talker_server.read(&mut [0u8; 2]).await.unwrap(), 2);
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut [0u8; 8]))
        .await
        .expect("the silent client is closed in time")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        silent_server.close_reason(),
        Some(CloseReason::FirstByteTimeout)
    );
    // The kernel: the talker's connection is still established, the silent one's is not
    // (our FIN went out and was acknowledged: FIN_WAIT_2 until the client closes).
    let silent_port = silent.local_addr().unwrap().port();
    let talker_port = talker.local_addr().unwrap().port();
    assert_eq!(support::ss_conn(addr.port(), talker_port, "established"), 1);
    assert_eq!(support::ss_conn(addr.port(), silent_port, "established"), 0);
    let stats = listener.stats();
    let m = Recorded::take(&snapshotter, addr);
    assert_eq!(stats.closed(CloseReason::FirstByteTimeout), 1);
    assert_eq!(
        m.counter("tcp_hygiene_connections_closed_total", "first_byte_timeout"),
        1
    );
    assert_eq!(stats.closed_total(), 1);
    assert_eq!(m.gauge("tcp_hygiene_connections_open", "open"), 1.0);
    drop((silent_server, talker_server));
}

/// The events of one connection, in order.
type Log = Arc<Mutex<Vec<(ConnectionId, ConnectionEventKind)>>>;

fn logging(builder: &mut Builder) -> Log {
    let log = Log::default();
    let sink = log.clone();
    builder.on_event(move |event: &ConnectionEvent| {
        sink.lock().unwrap().push((event.id, event.kind));
    });
    log
}

fn events_of(log: &Log, id: ConnectionId) -> Vec<ConnectionEventKind> {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, k)| *k)
        .collect()
}

/// The hook sees each connection's life in order: a reaped CLOSE_WAIT, a reset, an
/// application that closes first.
#[tokio::test]
async fn the_hook_sees_every_event_in_order() {
    use ConnectionEventKind::*;
    let mut builder = Builder::new();
    builder.close_wait_timeout(CLOSE_WAIT);
    let log = logging(&mut builder);
    let listener = support::listener(&builder).await;

    let (mut left, held) = support::connect_pair(&listener).await;
    let held_id = held.handle().id();
    left.shutdown().await.unwrap();
    assert_eq!(left.read(&mut [0u8; 8]).await.unwrap(), 0);
    drop(held);

    let (reset, reset_server) = support::connect_pair(&listener).await;
    let reset_id = reset_server.handle().id();
    support::reset(reset);
    wait_for(Duration::from_secs(2), "the reset is seen", || {
        reset_server.close_reason().is_some()
    })
    .await;
    drop(reset_server);

    let (mut client, server) = support::connect_pair(&listener).await;
    let server_id = server.handle().id();
    drop(server);
    assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
    wait_for(Duration::from_secs(2), "the release is seen", || {
        events_of(&log, server_id).contains(&Released)
    })
    .await;

    assert_eq!(
        events_of(&log, held_id),
        [
            Accepted,
            PeerClosed,
            Closed {
                reason: CloseReason::CloseWaitTimeout
            },
            LocalClosed,
            Released
        ]
    );
    assert_eq!(
        events_of(&log, reset_id),
        [
            Accepted,
            Failed {
                reason: CloseReason::ResetByPeer
            },
            Released
        ]
    );
    assert_eq!(events_of(&log, server_id), [Accepted, Released]);
}

/// A hook that panics at every event costs nothing but a log line: the accept loop, the
/// application and the supervisor go on, and a stuck CLOSE_WAIT is still reaped (as
/// `ss` shows).
#[tokio::test]
async fn a_panicking_hook_does_not_stop_enforcement() {
    require!(Need::Tool("ss"));
    let listener = support::listener(
        Builder::new()
            .close_wait_timeout(CLOSE_WAIT)
            .on_event(|_| panic!("a broken hook")),
    )
    .await;
    let port = listener.local_addr().unwrap().port();
    for _ in 0..3 {
        let (mut client, held) = support::connect_pair(&listener).await;
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        wait_for(Duration::from_secs(2), "CLOSE_WAIT", || {
            ss_count(port, "close-wait") == 1
        })
        .await;
        let mut got = Vec::new();
        tokio::time::timeout(CLOSE_WAIT * 10, client.read_to_end(&mut got))
            .await
            .expect("reaped in time")
            .unwrap();
        assert_eq!(held.close_reason(), Some(CloseReason::CloseWaitTimeout));
        wait_for(Duration::from_secs(2), "CLOSE_WAIT gone", || {
            ss_count(port, "close-wait") == 0
        })
        .await;
    }
    assert_eq!(listener.stats().closed(CloseReason::CloseWaitTimeout), 3);
}

/// The metrics example, as an operator runs it: stuck handlers' CLOSE_WAIT sockets are
/// reaped, and the Prometheus scrape, over HTTP, counts exactly the ones reaped.
#[cfg(feature = "axum")]
#[tokio::test]
async fn the_metrics_example_serves_a_scrape_that_counts_the_reaped() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    use support::example::{curl, Server};
    const LEAKED: usize = 3;
    let server = Server::start("metrics", &["--close-wait-timeout-ms", "300"]);
    let mut leaked = Vec::new();
    for _ in 0..LEAKED {
        let mut stuck = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stuck
            .write_all(b"POST /hang HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc")
            .await
            .unwrap();
        stuck.shutdown().await.unwrap();
        leaked.push(stuck);
    }
    wait_for(
        Duration::from_secs(2),
        "the leaked sockets in CLOSE_WAIT",
        || ss_count(server.port(), "close-wait") == LEAKED,
    )
    .await;
    let mut reaped = 0;
    for mut stuck in leaked {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stuck.read_to_end(&mut got))
            .await
            .expect("reaped in time")
            .unwrap();
        reaped += 1;
    }
    wait_for(Duration::from_secs(2), "CLOSE_WAIT gone", || {
        ss_count(server.port(), "close-wait") == 0
    })
    .await;
    let scrape = curl(&["-sf", &format!("{}/metrics", server.url())]);
    let value = |series: &str| {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
            .parse::<f64>()
            .unwrap()
    };
    let listener = format!("listener=\"{}\"", server.addr);
    assert_eq!(
        value(&format!(
            "tcp_hygiene_connections_closed_total{{{listener},reason=\"close_wait_timeout\"}}"
        )),
        reaped as f64,
        "{scrape}"
    );
    assert!(scrape.contains("# TYPE tcp_hygiene_close_wait_seconds summary"));
    let close_waits = value(&format!(
        "tcp_hygiene_close_wait_seconds_count{{{listener}}}"
    ));
    assert!(close_waits >= reaped as f64, "{scrape}");
    // The scrape's own connection is accepted too.
    let accepted = value(&format!(
        "tcp_hygiene_connections_accepted_total{{{listener}}}"
    ));
    assert_eq!(accepted, (LEAKED + 1) as f64, "{scrape}");
}

/// Issue 15, defect 7: one connection was counted under two close reasons. The peer stops
/// reading (4 KiB window); `max_connection_age` closes the connection gracefully while
/// the server writes; the application's write fails and it drops the stream with data
/// still queued; the lingering close that delivers it then resets it for
/// `write_idle_timeout` and counted that too. Each connection counts exactly once: in
/// `Stats` and in the metrics, whatever happens to its socket after its first reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_is_counted_under_one_close_reason() {
    require!(Need::Tool("ss"));
    let (listener, snapshotter) = recorded_listener(
        Builder::new()
            .max_connection_age(Duration::from_millis(300))
            .write_idle_timeout(Duration::from_millis(500)),
    )
    .await;
    let addr = listener.local_addr().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (client, accepted) = tokio::join!(socket.connect(addr), listener.accept());
    let (client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
    let client_port = client.local_addr().unwrap().port();
    // The client never reads. The server writes until a write fails (the age).
    let chunk = vec![5u8; 64 * 1024];
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = server.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await
    .expect("a write fails once the connection reaches its age");
    assert_eq!(support::reason_of(&err), CloseReason::MaxConnectionAge);
    drop(server); // data still queued: the lingering close takes it over
    wait_for(Duration::from_secs(5), "the server's socket gone", || {
        support::ss_conn(addr.port(), client_port, "connected") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = listener.stats();
    let by_reason: Vec<_> = CloseReason::all()
        .filter(|r| stats.closed(*r) > 0)
        .map(|r| (r.as_str(), stats.closed(r)))
        .collect();
    let recorded = Recorded::take(&snapshotter, addr);
    let mut metric: Vec<_> = recorded
        .0
        .iter()
        .filter(|((name, _), _)| name == "tcp_hygiene_connections_closed_total")
        .filter_map(|((_, reason), value)| match value {
            DebugValue::Counter(n) if *n > 0 => Some((reason.clone(), *n)),
            _ => None,
        })
        .collect();
    metric.sort();
    assert_eq!(
        (stats.accepted, stats.closed_total()),
        (1, 1),
        "one connection, closed by its age: Stats counts {by_reason:?}; the metric \
         tcp_hygiene_connections_closed_total counts {metric:?}"
    );
    assert_eq!(stats.closed(CloseReason::MaxConnectionAge), 1);
    assert_eq!(
        metric,
        vec![("max_connection_age".to_owned(), 1)],
        "tcp_hygiene_connections_closed_total"
    );
    drop(client);
}
