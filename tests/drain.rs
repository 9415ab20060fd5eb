//! Graceful drain with deadlines: idle, busy-but-finishing and stuck connections each
//! end as the deadlines say, and the call returns by the hard deadline.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionHandle, DrainReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

const SOFT: Duration = Duration::from_millis(600);
const HARD: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_idle_busy_and_stuck_connections_by_the_deadlines() {
    require!(Need::Tool("ss"));
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

/// The soft deadline half-closes only connections idle *between* requests. A handler
/// that has read its request and is still computing the answer (with a read kept
/// pending meanwhile, as hyper does to notice a client that leaves) is not idle: it
/// answers in full. Once it has answered and waits for the next request, it is idle, and
/// the drain half-closes it then, without waiting for the hard deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deadline_never_cuts_a_request_in_flight() {
    const COMPUTE: Duration = Duration::from_millis(400);
    let soft = Duration::from_millis(100);
    let hard = Duration::from_secs(5);
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (got_request_tx, mut got_request_rx) = mpsc::unbounded_channel::<()>();
    let server = tokio::spawn(listener.serve_with_shutdown(
        move |mut stream| {
            let got_request = got_request_tx.clone();
            async move {
                let mut buf = [0u8; 64];
                loop {
                    // Wait for a request.
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let _ = got_request.send(());
                    // Compute the answer, keeping a read pending to notice a client that
                    // leaves (the client sends nothing meanwhile).
                    let compute = tokio::time::sleep(COMPUTE);
                    tokio::pin!(compute);
                    tokio::select! {
                        _ = &mut compute => {}
                        r = stream.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                    }
                    if stream.write_all(b"answer\n").await.is_err() {
                        return;
                    }
                }
            }
        },
        async move {
            let _ = stop_rx.await;
        },
        soft,
        hard,
    ));
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"request\n").await.unwrap();
    got_request_rx.recv().await.unwrap();
    let started = Instant::now();
    stop_tx.send(()).unwrap();
    // The whole answer, then the drain's FIN once the connection is idle again.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut got))
        .await
        .expect("answer and EOF")
        .expect("no reset");
    let eof = started.elapsed();
    assert_eq!(got, b"answer\n", "the request in flight was answered");
    assert!(eof >= COMPUTE - Duration::from_millis(50), "{eof:?}");
    assert!(
        eof < Duration::from_secs(2),
        "half-closed when idle, not at the hard deadline: {eof:?}"
    );
    drop(client);
    let report = tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("drain returns once the client has gone")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < hard);
    assert_eq!(
        (
            report.connections,
            report.finished,
            report.idle_closed,
            report.forced
        ),
        (1, 0, 1, 0),
        "{report:?}"
    );
}

/// `connections == finished + idle_closed + forced`, exactly, also when many streams are
/// dropped right around the hard deadline (their releases still queued when it fires),
/// and a stream dropped before the hard deadline is never counted as forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn report_adds_up_when_streams_drop_at_the_hard_deadline() {
    const N: usize = 500;
    let soft = Duration::from_millis(200);
    let hard = Duration::from_millis(800);
    for (case, drop_at) in [
        (
            "dropped just before the hard deadline",
            hard - Duration::from_millis(20),
        ),
        ("dropped at the hard deadline", hard),
    ] {
        let listener = support::listener(&Builder::new()).await;
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel::<()>();
        let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel::<Instant>();
        let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
        let server = tokio::spawn(listener.serve_with_shutdown(
            move |stream| {
                let _ = accepted_tx.send(());
                let mut go = go_rx.clone();
                let dropped = dropped_tx.clone();
                async move {
                    // Busy (never reads, so never idle): held until `drop_at`.
                    let at = *go.wait_for(Option::is_some).await.unwrap();
                    tokio::time::sleep_until((at.unwrap() + drop_at).into()).await;
                    drop(stream);
                    let _ = dropped.send(Instant::now());
                }
            },
            async move {
                let _ = stop_rx.await;
            },
            soft,
            hard,
        ));
        let mut clients = Vec::with_capacity(N);
        for _ in 0..N {
            clients.push(TcpStream::connect(addr).await.unwrap());
            accepted_rx.recv().await.unwrap();
        }
        let started = Instant::now();
        go_tx.send(Some(started)).unwrap();
        stop_tx.send(()).unwrap();
        let report = tokio::time::timeout(hard + Duration::from_secs(3), server)
            .await
            .expect("drain returns")
            .unwrap()
            .unwrap();
        // Tasks aborted by the drain never report; the others dropped their stream at
        // the instant they report.
        let mut dropped_before_hard = 0;
        while let Ok(at) = dropped_rx.try_recv() {
            if at < started + hard {
                dropped_before_hard += 1;
            }
        }
        eprintln!(
            "{case}: {report:?} after {:?}; {dropped_before_hard} dropped before the hard deadline",
            started.elapsed()
        );
        assert_eq!(report.connections, N, "{case}: {report:?}");
        assert_eq!(
            report.finished + report.idle_closed + report.forced,
            N,
            "{case}: every connection counted once: {report:?}"
        );
        assert!(
            report.forced <= N - dropped_before_hard,
            "{case}: a stream dropped before the hard deadline was counted as forced: {report:?}"
        );
        drop(clients);
    }
}

/// Issue 15, defect 4: a connection accepted while a drain started escaped it. An accept
/// loop that holds every stream; four clients connecting as fast as they can; then
/// `Controller::drain(10 ms, 200 ms)`. Whatever the accept loop got is the drain's: the
/// report counts every accepted connection, and each is closed by the hard deadline.
/// (An `accept` already past its is-draining check admitted its connection after the
/// supervisor had taken the drain's list: in 9 of 15 rounds one accepted connection was
/// missing from the report and was never closed.) Twenty rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_as_a_drain_starts_is_drained_and_reported() {
    const ROUNDS: usize = 20;
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 50;
    let mut escaped = Vec::new();
    for round in 0..ROUNDS {
        let listener = support::listener(&Builder::new()).await;
        let addr = listener.local_addr().unwrap();
        let controller = listener.controller();
        let held = Arc::new(std::sync::Mutex::new(Vec::<tcp_hygiene::TcpStream>::new()));
        let accept_loop = {
            let held = held.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    held.lock().unwrap().push(stream);
                }
            })
        };
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(tokio::spawn(async move {
                let mut connected = Vec::new();
                while connected.len() < PER_CLIENT {
                    match TcpStream::connect(addr).await {
                        Ok(c) => connected.push(c),
                        Err(_) => break, // no longer listening
                    }
                }
                connected
            }));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let report = tokio::time::timeout(
            Duration::from_secs(5),
            controller.drain(Duration::from_millis(10), Duration::from_millis(200)),
        )
        .await
        .expect("the drain returns by its hard deadline");
        let mut connected = 0;
        for client in clients {
            connected += client.await.unwrap().len();
        }
        // Anything still on its way into the accept loop has arrived by now.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = std::mem::take(&mut *held.lock().unwrap());
        let open = held.iter().filter(|s| s.close_reason().is_none()).count();
        if held.len() != report.connections || open != 0 {
            escaped.push(format!(
                "round {round}: {} accepted, {connected} connected, report {report:?}, {open} \
                 accepted connections never closed",
                held.len()
            ));
        }
        accept_loop.abort();
    }
    assert!(
        escaped.is_empty(),
        "in {} of {ROUNDS} rounds the drain missed accepted connections:\n{}",
        escaped.len(),
        escaped.join("\n")
    );
}
