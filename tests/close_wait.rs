//! CLOSE_WAIT: the peer sent FIN and the handler never closes. Real loopback sockets,
//! checked with `ss`.

mod support;

use std::time::{Duration, Instant};

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
    // tcp-hygiene
    let listener = support::listener(Builder::new().close_wait_timeout(CLOSE_WAIT)).await;
    let port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (held, _) = listener.accept().await.unwrap();
    let handle = held.handle();

    // Control: plain tokio.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let mut plain_client = TcpStream::connect(plain.local_addr().unwrap()).await.unwrap();
    let (plain_held, _) = plain.accept().await.unwrap();

    client.shutdown().await.unwrap();
    plain_client.shutdown().await.unwrap();
    let fin_sent = Instant::now();

    wait_for(Duration::from_secs(2), "server socket in CLOSE_WAIT", || {
        ss_count(port, "close-wait") == 1 && ss_count(plain_port, "close-wait") == 1
    })
    .await;

    // The kernel's view: gone from CLOSE_WAIT (and from every state but the client's).
    wait_for(CLOSE_WAIT + Duration::from_secs(3), "CLOSE_WAIT reaped", || {
        ss_count(port, "close-wait") == 0
    })
    .await;
    let since_fin = fin_sent.elapsed();
    assert!(
        since_fin <= CLOSE_WAIT + Duration::from_millis(200),
        "reaped {since_fin:?} after FIN, budget {:?}",
        CLOSE_WAIT + Duration::from_millis(200)
    );
    assert!(since_fin >= CLOSE_WAIT, "reaped early: {since_fin:?}");

    // The client sees the server's FIN: EOF.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
        .await
        .expect("client read EOF in time")
        .unwrap();
    assert_eq!(n, 0);

    assert_eq!(handle.close_reason(), Some(CloseReason::CloseWaitTimeout));
    assert_eq!(handle.state(), ConnectionState::Closed);
    assert_eq!(listener.stats().closed(CloseReason::CloseWaitTimeout), 1);

    // The control is still stuck in CLOSE_WAIT, long after the same budget.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ss_count(plain_port, "close-wait"), 1, "plain tokio should leak");
    drop((held, plain_held));
}
