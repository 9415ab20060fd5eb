//! FIN_WAIT_2 on our side: we shut down our write half and the peer never sends its FIN.
//! Linux's `tcp_fin_timeout` does not apply (the socket is not orphaned: the application
//! still holds it); `fin_wait_timeout` does. Real loopback sockets, checked with `ss`.

mod support;

use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_conn, ss_count, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionState, KernelState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIN_WAIT: Duration = Duration::from_millis(400);

/// The server says its last word and shuts down its write half, then holds the stream
/// without polling it. The client reads the response and the EOF, and then never closes.
/// The server socket sits in FIN_WAIT_2 until `fin_wait_timeout` after our FIN; then the
/// library resets it: gone from FIN_WAIT_2 (and from every connected state) in `ss`, the
/// client's own socket is reset too, and the reason is `FinWaitTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_never_sends_fin_is_reset_after_fin_wait_timeout() {
    require!(Need::Tool("ss"));
    let listener = support::listener(
        Builder::new()
            .fin_wait_timeout(FIN_WAIT)
            .close_wait_timeout(None),
    )
    .await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let client_port = client.local_addr().unwrap().port();
    let handle = server.handle();

    server.write_all(b"bye\n").await.unwrap();
    let fin = Instant::now();
    server.shutdown().await.unwrap();
    assert_eq!(handle.state(), ConnectionState::LocallyClosed);

    // The client reads the response and our FIN, then does nothing.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got))
        .await
        .expect("client reads EOF")
        .unwrap();
    assert_eq!(got, b"bye\n");

    // The kernel's view: our socket in FIN_WAIT_2, the client's in CLOSE_WAIT.
    wait_for(
        Duration::from_secs(1),
        "server socket in FIN_WAIT_2",
        || ss_count(port, "fin-wait-2") == 1,
    )
    .await;
    assert_eq!(ss_conn(client_port, port, "close-wait"), 1);
    assert_eq!(
        handle.snapshot().tcp_info.map(|i| i.state),
        Some(KernelState::FinWait2)
    );

    // When the library closed it (its own flag, polled: `ss` itself takes tens of ms on a
    // busy host), then the kernel's view.
    wait_for(
        FIN_WAIT + Duration::from_secs(3),
        "closed by the library",
        || handle.close_reason().is_some(),
    )
    .await;
    let since_fin = fin.elapsed();
    wait_for(
        Duration::from_secs(2),
        "server socket gone from FIN_WAIT_2",
        || ss_count(port, "fin-wait-2") == 0,
    )
    .await;
    eprintln!("FIN_WAIT_2 closed {since_fin:?} after our FIN (timeout {FIN_WAIT:?})");
    assert!(since_fin >= FIN_WAIT, "closed early: {since_fin:?}");
    assert!(
        since_fin <= FIN_WAIT + Duration::from_millis(300),
        "closed late: {since_fin:?}"
    );
    // Reset, not a lingering state: nothing of the server's side is left in the kernel's
    // tables (no TIME_WAIT either), and the client's socket was reset too.
    assert_eq!(
        ss_count(port, "connected"),
        0,
        "{}",
        support::ss_lines(port)
    );
    wait_for(Duration::from_secs(1), "client socket reset", || {
        ss_conn(client_port, port, "connected") == 0
    })
    .await;
    let err = client
        .write_all(b"too late")
        .await
        .expect_err("the client's socket was reset");
    // Linux reports a reset of a socket in CLOSE_WAIT as EPIPE, elsewhere ECONNRESET.
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err:?}"
    );

    assert_eq!(handle.close_reason(), Some(CloseReason::FinWaitTimeout));
    assert_eq!(handle.state(), ConnectionState::Closed);
    let stats = listener.stats();
    assert_eq!(stats.closed(CloseReason::FinWaitTimeout), 1);
    assert_eq!(stats.closed_total(), 1);
    drop(server);
}

/// Control: the client closes promptly after our FIN. The connection ends the normal way
/// (our socket goes FIN_WAIT_2 -> TIME_WAIT), and the library does nothing: no reason, no
/// count, even long after `fin_wait_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_closes_promptly_is_left_alone() {
    require!(Need::Tool("ss"));
    let listener = support::listener(Builder::new().fin_wait_timeout(FIN_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();

    server.write_all(b"bye\n").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got))
        .await
        .expect("client reads EOF")
        .unwrap();
    assert_eq!(got, b"bye\n");
    drop(client); // the client's FIN

    // The kernel's view: the normal end of a connection we closed first.
    wait_for(Duration::from_secs(2), "server socket in TIME_WAIT", || {
        ss_count(port, "time-wait") == 1
    })
    .await;
    wait_for(Duration::from_secs(1), "library saw the peer's FIN", || {
        handle.state() == ConnectionState::Closed
    })
    .await;

    tokio::time::sleep(FIN_WAIT * 2).await;
    assert_eq!(handle.close_reason(), None);
    assert_eq!(listener.stats().closed(CloseReason::FinWaitTimeout), 0);
    assert_eq!(listener.stats().closed_total(), 0);
    assert_eq!(
        ss_count(port, "time-wait"),
        1,
        "still an ordinary TIME_WAIT"
    );
    // The server can still read the client's (empty) rest: a clean EOF, no error.
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

/// The peer's FIN arriving late but within the timeout also ends it normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_fin_within_timeout_is_left_alone() {
    require!(Need::Tool("ss"));
    let listener = support::listener(Builder::new().fin_wait_timeout(FIN_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    wait_for(
        Duration::from_secs(1),
        "server socket in FIN_WAIT_2",
        || ss_count(port, "fin-wait-2") == 1,
    )
    .await;
    tokio::time::sleep(FIN_WAIT / 2).await;
    client.shutdown().await.unwrap();
    wait_for(Duration::from_secs(2), "server socket in TIME_WAIT", || {
        ss_count(port, "time-wait") == 1
    })
    .await;
    tokio::time::sleep(FIN_WAIT).await;
    assert_eq!(handle.close_reason(), None);
    assert_eq!(handle.state(), ConnectionState::Closed);
    assert_eq!(listener.stats().closed_total(), 0);
    drop((server, client));
}

/// An orderly close, in either order, is not a failure: when both FINs have been
/// exchanged while the application still holds the stream, the kernel socket is CLOSE
/// (its TIME_WAIT lives on in a separate mini-socket) and epoll reports a hang-up, but
/// nothing was reset and nothing timed out. No close reason, nothing counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_close_in_either_order_has_no_reason() {
    const N: usize = 20;
    let listener = support::listener(Builder::new().fin_wait_timeout(FIN_WAIT)).await;
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..N * 2 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let handle = server.handle();
        let server_first = i % 2 == 0;
        let mut rest = Vec::new();
        if server_first {
            // We close first (FIN_WAIT_2), the client follows at once (TIME_WAIT here).
            server.shutdown().await.unwrap();
            client.read_to_end(&mut rest).await.unwrap();
            client.shutdown().await.unwrap();
            server.read_to_end(&mut rest).await.unwrap();
        } else {
            // The client closes first (CLOSE_WAIT), we read EOF and follow (LAST_ACK).
            client.shutdown().await.unwrap();
            server.read_to_end(&mut rest).await.unwrap();
            server.shutdown().await.unwrap();
            client.read_to_end(&mut rest).await.unwrap();
        }
        assert!(rest.is_empty());
        held.push((i, server_first, handle, server, client));
    }
    let mut wrong = Vec::new();
    for (i, server_first, handle, _, _) in &held {
        let order = if *server_first {
            "server first"
        } else {
            "client first"
        };
        wait_for(Duration::from_secs(2), "state Closed", || {
            handle.state() == ConnectionState::Closed
        })
        .await;
        if let Some(reason) = handle.close_reason() {
            wrong.push(format!("{i} ({order}): {reason}"));
        }
    }
    assert!(wrong.is_empty(), "orderly closes given a reason: {wrong:?}");
    // Let any late event be processed, then look again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = listener.stats();
    assert_eq!(stats.closed_total(), 0, "{stats:?}");
    assert_eq!(stats.open_in(ConnectionState::Closed), 2 * N as u64);
}

/// Every FIN we send is followed by the fin-wait rule, also the one the library sent
/// itself. Here `idle_timeout` closes a connection whose handler holds the stream and
/// never polls it; the client takes our FIN and never sends its own. The server socket
/// must not sit in FIN_WAIT_2 for ever: `fin_wait_timeout` after our FIN it is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_wait_follows_the_librarys_own_close_while_the_stream_is_held() {
    require!(Need::Tool("ss"));
    const IDLE: Duration = Duration::from_millis(300);
    let listener =
        support::listener(Builder::new().idle_timeout(IDLE).fin_wait_timeout(FIN_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, server) = support::connect_pair(&listener).await;
    let client_port = client.local_addr().unwrap().port();
    let handle = server.handle();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest))
        .await
        .expect("our FIN")
        .unwrap();
    let fin = Instant::now();
    assert_eq!(handle.close_reason(), Some(CloseReason::IdleTimeout));
    wait_for(
        Duration::from_secs(1),
        "server socket in FIN_WAIT_2",
        || ss_conn(port, client_port, "fin-wait-2") == 1,
    )
    .await;
    let gone = wait_for(
        FIN_WAIT * 2 + Duration::from_secs(2),
        "server socket reset out of FIN_WAIT_2",
        || ss_conn(port, client_port, "connected") == 0,
    )
    .await;
    let since_fin = fin.elapsed();
    eprintln!(
        "FIN_WAIT_2 after our own close ended {since_fin:?} after our FIN ({gone:?} of waiting)"
    );
    assert!(
        since_fin + Duration::from_millis(50) >= FIN_WAIT,
        "early: {since_fin:?}"
    );
    assert!(
        since_fin <= FIN_WAIT + FIN_WAIT / 8 + Duration::from_millis(400),
        "late: {since_fin:?}"
    );
    // The first reason stays; the reset is its last step, not a second close.
    assert_eq!(handle.close_reason(), Some(CloseReason::IdleTimeout));
    assert_eq!(listener.stats().closed_total(), 1);
    drop(server);
}

/// Once the application has dropped a stream after our FIN, the socket is an orphan and
/// the kernel's `tcp_fin_timeout` (60 s by default) would decide how long it stays in
/// FIN_WAIT_2. `fin_wait_timeout` still bounds it (rounded up to whole seconds, the
/// kernel's unit for `TCP_LINGER2`). Control: plain tokio, same sequence, still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_wait_bounds_the_orphan_after_the_application_drops_the_stream() {
    require!(Need::Tool("ss"));
    let host_fin_timeout: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
        .expect("procfs")
        .trim()
        .parse()
        .unwrap();
    assert!(
        host_fin_timeout >= 5,
        "the control needs tcp_fin_timeout >= 5 s"
    );
    let listener = support::listener(Builder::new().fin_wait_timeout(FIN_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let mut clients = Vec::new();
    for _ in 0..10 {
        let (client, mut server) = support::connect_pair(&listener).await;
        server.shutdown().await.unwrap();
        drop(server);
        let plain_client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (mut plain_server, _) = plain.accept().await.unwrap();
        plain_server.shutdown().await.unwrap();
        drop(plain_server);
        clients.push((client, plain_client));
    }
    let dropped = Instant::now();
    // The clients read our FIN and never answer.
    for (client, plain_client) in &mut clients {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        plain_client.read_to_end(&mut rest).await.unwrap();
    }
    wait_for(Duration::from_secs(1), "orphans in FIN_WAIT_2", || {
        ss_count(port, "fin-wait-2") == 10 && ss_count(plain_port, "fin-wait-2") == 10
    })
    .await;
    // FIN_WAIT rounded up to 1 s; the kernel's floor for TCP_LINGER2 is 3.5 × RTO.
    wait_for(Duration::from_secs(3), "orphans gone", || {
        ss_count(port, "fin-wait-2") == 0
    })
    .await;
    eprintln!("orphans gone {:?} after the drop", dropped.elapsed());
    assert_eq!(
        ss_count(plain_port, "fin-wait-2"),
        10,
        "control: plain tokio's orphans wait for tcp_fin_timeout ({host_fin_timeout} s)"
    );
    drop(clients);
}

/// Issue 15, defect 8: `fin_wait_timeout` reset a half-closed peer that was still
/// sending, because its clock counted only the acknowledgements of our bytes. The server
/// says its last word and shuts down its write half; the client reads it and our FIN, and
/// keeps uploading 4 bytes every 50 ms for five times the timeout. A peer that keeps
/// sending after our FIN is legal and well-behaved: it is never reset while it does, its
/// every write succeeds, and the server's socket stays in FIN_WAIT_2. (It was reset about
/// 560 ms after our FIN, `FinWaitTimeout`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_peer_that_keeps_uploading_is_not_reset_by_fin_wait_timeout() {
    require!(Need::Tool("ss"));
    let listener = support::listener(
        Builder::new()
            .fin_wait_timeout(FIN_WAIT)
            .close_wait_timeout(None),
    )
    .await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let client_port = client.local_addr().unwrap().port();
    let handle = server.handle();
    server.write_all(b"send me the rest\n").await.unwrap();
    server.shutdown().await.unwrap();
    let fin = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got))
        .await
        .expect("client reads EOF")
        .unwrap();
    assert_eq!(got, b"send me the rest\n");
    // The server reads the upload as it comes.
    let reader = tokio::spawn(async move {
        let mut total = 0;
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await
        {
            total += n;
        }
        (total, server)
    });
    let uploading = FIN_WAIT * 5;
    let mut sent = 0;
    while fin.elapsed() < uploading {
        if let Err(e) = client.write_all(b"data").await {
            panic!(
                "the client's upload failed {:?} after our FIN ({sent} bytes sent): {e:?}; \
                 close reason {:?}",
                fin.elapsed(),
                handle.close_reason()
            );
        }
        sent += 4;
        if let Some(reason) = handle.close_reason() {
            panic!(
                "closed ({reason:?}) {:?} after our FIN (fin_wait_timeout {FIN_WAIT:?}) while \
                 the peer kept sending ({sent} bytes so far, 4 every 50 ms)",
                fin.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handle.close_reason(), None);
    assert_eq!(
        ss_conn(port, client_port, "fin-wait-2"),
        1,
        "{}",
        support::ss_lines(port)
    );
    // The client ends the upload with its FIN: an orderly close, nothing counted.
    client.shutdown().await.unwrap();
    let (total, server) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the server reads the upload to its end")
        .unwrap();
    assert_eq!(total, sent);
    assert_eq!(listener.stats().closed_total(), 0);
    drop(server);
}
