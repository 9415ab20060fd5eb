//! The supervisor's lifetime: it ends (and its epoll descriptor closes) when the listener
//! and the last connection are gone. One test per binary, because it counts the process's
//! descriptors.

mod support;

use std::time::Duration;

use support::{open_fds, wait_for};
use tcp_hygiene::Builder;
use tokio::net::TcpStream;

#[tokio::test]
async fn supervisor_ends_with_the_listener_and_its_last_connection() {
    // Warm up the runtime's own descriptors before taking the baseline.
    drop(TcpStream::connect("127.0.0.1:9").await);
    let baseline = open_fds();

    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
        streams.push(listener.accept().await.unwrap().0);
    }
    // listener + its epoll and timerfd + 3 accepted + 3 clients
    assert!(open_fds() >= baseline + 9, "{} vs {baseline}", open_fds());

    drop(listener);
    drop(clients);
    // The connections keep the supervisor (and its epoll) alive while they exist.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        open_fds(),
        baseline + 2 + 3,
        "the supervisor's epoll and timerfd, and 3 streams, remain"
    );

    drop(streams);
    wait_for(
        Duration::from_secs(2),
        "descriptor count back to baseline",
        || open_fds() == baseline,
    )
    .await;
}
