//! The peer's FIN is seen by the kernel watcher, not by reads: `peer_closed()` and
//! `state()` change within 50 ms of the client's `shutdown(Write)` while the handler never
//! polls its stream. Real loopback sockets; the kernel's view is checked with `ss`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, ConnectionState};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONNECTIONS: usize = 20;
const BUDGET: Duration = Duration::from_millis(50);

/// Latencies, sorted, with p50 and max.
fn summary(mut v: Vec<Duration>) -> (Vec<Duration>, Duration, Duration) {
    v.sort();
    let p50 = v[v.len() / 2];
    let max = *v.last().expect("non-empty");
    (v, p50, max)
}

/// A thread (not a tokio task, so it does not depend on the runtime's scheduling) that
/// spins on `state()` and returns the instant it first reads `PeerClosed`.
fn watch_state(
    handle: tcp_hygiene::ConnectionHandle,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            match handle.state() {
                ConnectionState::PeerClosed => return Some(Instant::now()),
                ConnectionState::Open => {}
                other => panic!("unexpected state {other:?} before the peer's FIN was seen"),
            }
            if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
                return None;
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    })
}

/// 20 connections, one at a time, all kept open (so the watcher holds many sockets).
/// For each: the handler holds the stream and never reads it; the client sends a request
/// (left unread on the server, so the FIN queues behind data) and then shuts down its
/// write half. `stream.peer_closed()`, `handle.peer_closed()` and `handle.state()` must
/// all report the FIN within 50 ms, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_closed_fires_within_50ms_of_fin_without_reads() {
    require!(Need::Tool("ss"));
    let listener = support::listener(Builder::new().close_wait_timeout(None)).await;
    let addr = listener.local_addr().unwrap();
    let port = addr.port();

    let mut held = Vec::new();
    let (mut stream_lat, mut handle_lat, mut state_lat) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CONNECTIONS {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let handle = stream.handle();
        assert_eq!(handle.state(), ConnectionState::Open);
        assert!(!handle.is_peer_closed());

        // Unread data ahead of the FIN: the handler never reads it.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

        // Both futures are created (and parked) before the FIN.
        let from_stream = stream.peer_closed();
        let from_handle = handle.peer_closed();
        let t_stream = tokio::spawn(async move {
            from_stream.await;
            Instant::now()
        });
        let t_handle = tokio::spawn(async move {
            from_handle.await;
            Instant::now()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let t_state = watch_state(handle.clone(), stop.clone());
        // Let the tasks park on the futures.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !t_stream.is_finished() && !t_handle.is_finished(),
            "resolved before FIN"
        );

        let fin = Instant::now();
        client.shutdown().await.unwrap();

        let limit = Duration::from_secs(5);
        let at_stream = tokio::time::timeout(limit, t_stream)
            .await
            .expect("stream.peer_closed")
            .unwrap();
        let at_handle = tokio::time::timeout(limit, t_handle)
            .await
            .expect("handle.peer_closed")
            .unwrap();
        let at_state = tokio::task::spawn_blocking(move || t_state.join().unwrap())
            .await
            .unwrap()
            .expect("state() never became PeerClosed");
        stop.store(true, Ordering::Relaxed);

        stream_lat.push(at_stream.saturating_duration_since(fin));
        handle_lat.push(at_handle.saturating_duration_since(fin));
        state_lat.push(at_state.saturating_duration_since(fin));

        assert_eq!(
            handle.state(),
            ConnectionState::PeerClosed,
            "connection {i}"
        );
        assert!(handle.is_peer_closed());
        assert_eq!(
            handle.close_reason(),
            None,
            "nothing was closed by the library"
        );
        // A future created after the fact resolves at once (cancel-safe, level-triggered).
        tokio::time::timeout(Duration::from_millis(100), stream.peer_closed())
            .await
            .expect("a new peer_closed() resolves at once after the FIN");
        held.push((client, stream, handle));
    }

    // The kernel agrees: every server socket is in CLOSE_WAIT, none was read.
    wait_for(
        Duration::from_secs(2),
        "all server sockets in CLOSE_WAIT",
        || ss_count(port, "close-wait") == CONNECTIONS,
    )
    .await;
    let stats = listener.stats();
    assert_eq!(
        stats.open_in(ConnectionState::PeerClosed),
        CONNECTIONS as u64
    );
    assert_eq!(stats.closed_total(), 0);
    for (_, stream, _) in &held {
        let info = stream.handle().snapshot();
        assert_eq!(info.bytes_read, 0, "the handler never read");
        assert_eq!(
            info.tcp_info.expect("TCP_INFO on Linux").state,
            tcp_hygiene::KernelState::CloseWait
        );
    }

    let (stream_lat, s50, smax) = summary(stream_lat);
    let (handle_lat, h50, hmax) = summary(handle_lat);
    let (state_lat, st50, stmax) = summary(state_lat);
    eprintln!("peer-closed latency over {CONNECTIONS} connections (FIN -> observed):");
    eprintln!("  stream.peer_closed(): p50 {s50:?}, max {smax:?}  all {stream_lat:?}");
    eprintln!("  handle.peer_closed(): p50 {h50:?}, max {hmax:?}  all {handle_lat:?}");
    eprintln!("  handle.state():       p50 {st50:?}, max {stmax:?}  all {state_lat:?}");
    assert!(
        smax <= BUDGET,
        "stream.peer_closed() max {smax:?} > {BUDGET:?}"
    );
    assert!(
        hmax <= BUDGET,
        "handle.peer_closed() max {hmax:?} > {BUDGET:?}"
    );
    assert!(stmax <= BUDGET, "state() max {stmax:?} > {BUDGET:?}");
}

/// A reset is a close too: `peer_closed()` resolves when the peer sends RST (SO_LINGER 0
/// close), without reads, and the state leaves `Open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_closed_fires_on_reset_without_reads() {
    let listener = support::listener(Builder::new().close_wait_timeout(None)).await;
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let handle = stream.handle();
    let waiter = tokio::spawn(handle.peer_closed());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());

    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let rst = Instant::now();
    drop(client);
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("peer_closed() after RST")
        .unwrap();
    let latency = rst.elapsed();
    eprintln!("peer_closed() after RST: {latency:?}");
    assert!(latency <= BUDGET, "{latency:?}");
    assert_ne!(handle.state(), ConnectionState::Open);
    assert!(handle.is_peer_closed());
    drop(stream);
}

/// Dropping the stream resolves pending `peer_closed()` futures of its handles (nobody
/// waits forever on a connection that is gone), and the handle reports it.
#[tokio::test]
async fn peer_closed_resolves_when_stream_is_dropped() {
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let handle = stream.handle();
    let waiter = tokio::spawn(handle.peer_closed());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "no FIN yet");
    drop(stream);
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("resolves when the stream is dropped")
        .unwrap();
    assert!(handle.is_peer_closed());
}
