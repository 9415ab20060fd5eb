//! Graceful drain with deadlines: idle, busy-but-finishing and stuck connections each
//! end as the deadlines say, and the call returns by the hard deadline.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionHandle, DrainReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

const SOFT: Duration = Duration::from_millis(600);
const HARD: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_idle_busy_and_stuck_connections_by_the_deadlines() {
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let order = Arc::new(AtomicUsize::new(0));
    let (handles_tx, mut handles_rx) = mpsc::unbounded_channel::<(usize, ConnectionHandle)>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();

    let server = tokio::spawn(listener.serve_with_shutdown(
        move |mut stream| {
            let n = order.fetch_add(1, Ordering::SeqCst);
            let handle = stream.handle();
            let _ = handles_tx.send((n, handle.clone()));
            async move {
                let mut buf = [0u8; 64];
                match n {
                    // Idle: reads until EOF (the client closes once the server half-closes).
                    0 => while let Ok(1..) = stream.read(&mut buf).await {},
                    // Busy: on the drain signal, finishes its current work, then closes.
                    1 => {
                        handle.draining().await;
                        for _ in 0..5 {
                            stream.write_all(b"work").await.unwrap();
                            tokio::time::sleep(Duration::from_millis(40)).await;
                        }
                        stream.shutdown().await.unwrap();
                    }
                    // Stuck: holds the stream and never polls it.
                    _ => {
                        let _held = stream;
                        std::future::pending::<()>().await;
                    }
                }
            }
        },
        async move {
            let _ = stop_rx.await;
        },
        SOFT,
        HARD,
    ));

    // Connect in a known order.
    let mut clients = Vec::new();
    let mut handles = Vec::new();
    for i in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (n, handle) = handles_rx.recv().await.unwrap();
        assert_eq!(n, i);
        handles.push(handle);
    }
    let mut idle = clients.remove(0);
    let mut busy = clients.remove(0);
    let mut stuck = clients.remove(0);
    // The idle client closes when it reads the server's FIN.
    let idle_client = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let n = idle.read(&mut buf).await.unwrap();
        (n, Instant::now())
    });

    let started = Instant::now();
    stop_tx.send(()).unwrap();

    // The busy client gets all its work, then EOF, well before the soft deadline.
    let mut got = Vec::new();
    busy.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"work".repeat(5));

    let report: DrainReport = tokio::time::timeout(HARD + Duration::from_secs(2), server)
        .await
        .expect("drain returns by the hard deadline")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took <= HARD + Duration::from_millis(300),
        "drain took {took:?}"
    );
    assert!(
        took >= HARD,
        "the stuck connection must hold the drain until the hard deadline: {took:?}"
    );

    let (n, idle_eof_at) = idle_client.await.unwrap();
    assert_eq!(n, 0, "idle client reads the server's FIN");
    let idle_eof = idle_eof_at - started;
    assert!(
        idle_eof >= SOFT && idle_eof < SOFT + Duration::from_millis(300),
        "{idle_eof:?}"
    );

    assert_eq!(
        (
            report.connections,
            report.finished,
            report.idle_closed,
            report.forced
        ),
        (3, 1, 1, 1),
        "{report:?}"
    );
    assert_eq!(handles[2].close_reason(), Some(CloseReason::Drained));
    assert_eq!(handles[1].close_reason(), None);

    // The stuck handler's task was aborted: its socket is gone, not merely shut down.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), stuck.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop((stuck, busy));
    wait_for(
        Duration::from_secs(3),
        "no server socket left but TIME_WAIT",
        || ss_count(port, "connected") == ss_count(port, "time-wait"),
    )
    .await;
}

#[tokio::test]
async fn drain_with_no_connections_returns_at_once() {
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let report = listener
        .drain(Duration::from_secs(5), Duration::from_secs(10))
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(report.connections, 0);
    // No longer accepting: the port is closed.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Many connections whose clients all leave at once during a drain: each is counted as
/// finished, and the drain returns as soon as the last is gone, not at the hard deadline.
/// (The supervisor must not forget a connection before its release is counted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_counts_every_connection_that_ends_on_its_own() {
    const N: usize = 400;
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel::<()>();
    let server = tokio::spawn(listener.serve_with_shutdown(
        move |mut stream| {
            let _ = accepted_tx.send(());
            async move {
                let mut buf = [0u8; 64];
                while let Ok(1..) = stream.read(&mut buf).await {}
            }
        },
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(10),
        Duration::from_secs(20),
    ));
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(TcpStream::connect(addr).await.unwrap());
        accepted_rx.recv().await.unwrap();
    }
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    drop(clients);
    let report = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("drain returns once every connection has ended")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (
            report.connections,
            report.finished,
            report.idle_closed,
            report.forced
        ),
        (N, N, 0, 0),
        "{report:?}"
    );
}
