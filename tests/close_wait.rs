//! CLOSE_WAIT: the peer sent FIN and the handler never closes. Real loopback sockets,
//! checked with `ss`.

mod support;

use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The handler accepts, then never polls its stream again (held forever). After the
/// client's FIN the server socket must leave CLOSE_WAIT within close_wait_timeout +
/// 200 ms, and the client must read EOF. Control: a plain tokio listener under the same
/// handler keeps the socket in CLOSE_WAIT.
#[tokio::test]
async fn stuck_handler_close_wait_is_reaped_and_plain_tokio_is_not() {
    require!(Need::Tool("ss"));
    // tcp-hygiene
    let listener = support::listener(Builder::new().close_wait_timeout(CLOSE_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, held) = support::connect_pair(&listener).await;
    let handle = held.handle();

    // Control: plain tokio.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let mut plain_client = TcpStream::connect(plain.local_addr().unwrap())
        .await
        .unwrap();
    let (plain_held, _) = plain.accept().await.unwrap();

    client.shutdown().await.unwrap();
    plain_client.shutdown().await.unwrap();
    let fin_sent = Instant::now();

    wait_for(
        Duration::from_secs(2),
        "server socket in CLOSE_WAIT",
        || ss_count(port, "close-wait") == 1 && ss_count(plain_port, "close-wait") == 1,
    )
    .await;

    // The client sees the server's FIN: EOF. Its arrival times the reap (an event; each
    // `ss` call takes tens of ms on a host with many TIME_WAIT sockets).
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(3), client.read(&mut buf))
        .await
        .expect("client read EOF in time")
        .unwrap();
    assert_eq!(n, 0);
    let since_fin = fin_sent.elapsed();
    assert!(
        since_fin <= CLOSE_WAIT + Duration::from_millis(200),
        "reaped {since_fin:?} after FIN, budget {:?}",
        CLOSE_WAIT + Duration::from_millis(200)
    );
    assert!(since_fin >= CLOSE_WAIT, "reaped early: {since_fin:?}");

    // The kernel's view: gone from CLOSE_WAIT (and from every state but the client's).
    wait_for(Duration::from_secs(2), "CLOSE_WAIT reaped", || {
        ss_count(port, "close-wait") == 0
    })
    .await;

    assert_eq!(handle.close_reason(), Some(CloseReason::CloseWaitTimeout));
    assert_eq!(handle.state(), ConnectionState::Closed);
    assert_eq!(listener.stats().closed(CloseReason::CloseWaitTimeout), 1);

    // The control is still stuck in CLOSE_WAIT, long after the same budget.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ss_count(plain_port, "close-wait"),
        1,
        "plain tokio should leak"
    );
    drop((held, plain_held));
}

/// Deterministic, position-dependent bytes, so that every byte the client reads can be
/// checked (a lost, duplicated or reordered chunk shows up at the first wrong byte).
fn pattern_byte(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

/// `close_wait_timeout` is an inactivity timeout: a server still streaming to a
/// half-closed client is not cut off while its writes progress, however long that takes
/// (here 1.5 s of writes with a 300 ms timeout). Once it stops writing (while still
/// holding the stream, not polling it), the connection is closed about
/// `close_wait_timeout` later: gone from CLOSE_WAIT in `ss`, EOF at the client after every
/// byte, reason `CloseWaitTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_to_half_closed_client_is_not_cut_off_then_reaped() {
    require!(Need::Tool("ss"));
    const TIMEOUT: Duration = Duration::from_millis(300);
    const CHUNK: usize = 4096;
    const EVERY: Duration = Duration::from_millis(50);
    const STREAM_FOR: Duration = Duration::from_millis(1500);

    let listener = support::listener(Builder::new().close_wait_timeout(TIMEOUT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();

    // The client half-closes at once, then only reads.
    client.shutdown().await.unwrap();
    wait_for(
        Duration::from_secs(2),
        "server socket in CLOSE_WAIT",
        || ss_count(port, "close-wait") == 1,
    )
    .await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.read(&mut buf).await {
                Ok(0) => return (got, Instant::now(), client),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("client read failed after {} bytes: {e}", got.len()),
            }
        }
    });

    // The server streams a chunk every 50 ms for 1.5 s, five times the timeout.
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(EVERY);
    while start.elapsed() < STREAM_FOR {
        tick.tick().await;
        let chunk: Vec<u8> = (sent..sent + CHUNK).map(pattern_byte).collect();
        server.write_all(&chunk).await.unwrap_or_else(|e| {
            panic!("cut off after {:?} and {sent} bytes: {e}", start.elapsed())
        });
        sent += CHUNK;
        assert_eq!(handle.close_reason(), None, "closed while streaming");
    }
    let last_write = Instant::now();
    assert_eq!(handle.state(), ConnectionState::PeerClosed);
    assert_eq!(
        ss_count(port, "close-wait"),
        1,
        "still CLOSE_WAIT while streaming"
    );

    // Stop writing, keep holding the stream (never polled again).
    // The client's EOF marks the close (an event, unlike polling `ss`, which takes tens of
    // ms on a busy host); then the kernel's view.
    let (got, eof_at, _client) = tokio::time::timeout(TIMEOUT * 2 + Duration::from_secs(3), reader)
        .await
        .expect("client reads EOF")
        .unwrap();
    let quiet = eof_at.saturating_duration_since(last_write);
    wait_for(
        Duration::from_secs(2),
        "CLOSE_WAIT reaped after writes stopped",
        || ss_count(port, "close-wait") == 0,
    )
    .await;
    let budget = TIMEOUT + TIMEOUT / 8 + Duration::from_millis(300);
    eprintln!(
        "streamed {sent} bytes for {:?}; reaped (client EOF) {quiet:?} after the last write",
        last_write - start,
    );
    assert!(
        quiet >= TIMEOUT,
        "reaped early: {quiet:?} after the last write"
    );
    assert!(
        quiet <= budget,
        "reaped late: {quiet:?} after the last write, budget {budget:?}"
    );

    assert_eq!(got.len(), sent, "every byte arrived before EOF");
    if let Some(i) = (0..sent).find(|&i| got[i] != pattern_byte(i)) {
        panic!("byte {i} differs: got {}, want {}", got[i], pattern_byte(i));
    }
    assert_eq!(handle.close_reason(), Some(CloseReason::CloseWaitTimeout));
    assert_eq!(handle.state(), ConnectionState::Closed);
    assert_eq!(listener.stats().closed(CloseReason::CloseWaitTimeout), 1);
    assert_eq!(listener.stats().closed_total(), 1);
    // The application's next write fails and says why.
    let err = server
        .write_all(b"late")
        .await
        .expect_err("write after close");
    assert_eq!(support::reason_of(&err), CloseReason::CloseWaitTimeout);
    drop(server);
}

/// Both FINs exchanged, with our shutdown made behind the stream's back (on the socket
/// itself, so the stream never sees it): the kernel ends the connection normally and the
/// library must not later count it as a lingering CLOSE_WAIT.
#[tokio::test]
async fn normal_close_is_never_counted_as_close_wait() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let listener = support::listener(Builder::new().close_wait_timeout(TIMEOUT)).await;
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    client.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    socket2::SockRef::from(server.get_ref())
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    drop(client);
    // Hold the stream well past the timeout.
    tokio::time::sleep(TIMEOUT * 3).await;
    assert_eq!(handle.close_reason(), None);
    assert_eq!(listener.stats().closed_total(), 0);
    drop(server);
}

/// The classic bug in its other shape: the handler reads the client's EOF itself, and
/// then hangs instead of closing. The FIN was seen by the application's own read, not
/// (only) by the kernel watcher; either must start the CLOSE_WAIT clock. This is the
/// path a platform without kernel FIN events (and a socket the watcher could not take)
/// depends on; CI also runs it on the portable implementation.
#[tokio::test]
async fn handler_that_reads_eof_then_hangs_is_reaped() {
    require!(Need::Tool("ss"));
    let listener = support::listener(Builder::new().close_wait_timeout(CLOSE_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let fin_sent = Instant::now();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // Now it hangs, holding the stream.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(3), client.read(&mut buf))
        .await
        .expect("reaped: the client reads our FIN")
        .unwrap();
    assert_eq!(n, 0);
    let since_fin = fin_sent.elapsed();
    assert!(since_fin >= CLOSE_WAIT, "early: {since_fin:?}");
    assert!(
        since_fin <= CLOSE_WAIT + CLOSE_WAIT / 8 + Duration::from_millis(300),
        "late: {since_fin:?}"
    );
    wait_for(Duration::from_secs(2), "CLOSE_WAIT reaped", || {
        ss_count(port, "close-wait") == 0
    })
    .await;
    assert_eq!(handle.close_reason(), Some(CloseReason::CloseWaitTimeout));
    drop(server);
}

/// The library's close of a `CLOSE_WAIT` socket must not cut off what the peer sent
/// before its FIN: a handler that reads a 50,000-byte upload slowly (1,000 bytes, then
/// nothing for longer than the timeout) still reads every byte, then EOF, and the close
/// is recorded as `CloseWaitTimeout`. Linux (where CI runs it): the portable
/// implementation sees a FIN behind unread data only when the application reads up to it
/// (`sys::fallback::probe`), so there the close this test needs never comes.
#[cfg(not(tcp_hygiene_fallback))]
#[tokio::test]
async fn a_slow_reader_of_an_upload_gets_every_byte_after_the_close() {
    const UPLOAD: usize = 50_000;
    let listener = support::listener(Builder::new().close_wait_timeout(CLOSE_WAIT)).await;
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let upload: Vec<u8> = (0..UPLOAD).map(|i| (i % 251) as u8).collect();
    client.write_all(&upload).await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = vec![0u8; 1000];
    server.read_exact(&mut got).await.unwrap();
    // The handler works on it for longer than the timeout, writing nothing.
    wait_for(CLOSE_WAIT * 6, "the library's close", || {
        server.close_reason().is_some()
    })
    .await;
    assert_eq!(server.close_reason(), Some(CloseReason::CloseWaitTimeout));
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), UPLOAD, "the upload was cut off");
    assert_eq!(got, upload);
    // Our FIN reached the client: its read ends.
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
}
