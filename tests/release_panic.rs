//! A release that panics (a tracing subscriber or a metrics recorder that panics inside
//! it) must still let go of the descriptor before it is closed: the supervisor must
//! never act on a number the kernel hands to another socket. In a file of its own: it
//! watches descriptor numbers, which tests running alongside in the same process would
//! take.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tcp_hygiene::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Panics at every event while armed: a tracing subscriber that panics (a buggy layer, a
/// full buffer that panics), as a metrics recorder could too.
struct PanickingLayer;

static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanickingLayer {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if ARMED.load(Ordering::SeqCst) {
            panic!("the tracing layer panics");
        }
    }
}

/// Issue 15, suspected case "a panic inside `release()` before the descriptor is
/// forgotten unwinds into closing a descriptor still marked usable" (confirmed). The
/// application drops a stream whose peer reset it, and the subscriber panics at the
/// event the release logs (the state change to closed, logged before the descriptor is
/// forgotten). The stream's descriptor is closed during the unwinding and its number is
/// taken at once by an unrelated connection. The library must never act on it: that
/// connection still works after the dropped one's `max_connection_age` (abortive) has
/// passed. (The supervisor still took the slot for live, and reset the stranger.)
#[tokio::test]
async fn a_panic_while_a_stream_is_released_never_lets_the_supervisor_touch_a_stranger() {
    use std::os::fd::AsRawFd;
    use tracing_subscriber::layer::SubscriberExt;
    let age = Duration::from_millis(400);
    let listener = support::listener(
        Builder::new()
            .max_connection_age(age)
            .close_mode(tcp_hygiene::CloseMode::Abortive),
    )
    .await;
    let stranger_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(PanickingLayer));
    // The peer resets; the handler's read gets the reset before the supervisor looked (no
    // await in between on this single-threaded runtime), and it drops the stream.
    support::reset(client);
    let got = server.read(&mut [0u8; 16]).await;
    assert!(got.is_err(), "the handler reads the reset: {got:?}");
    let fd = server.get_ref().as_raw_fd();
    ARMED.store(true, Ordering::SeqCst);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(server)));
    ARMED.store(false, Ordering::SeqCst);
    // A stranger's connection takes the descriptor number at once (one of its two ends:
    // the dropped stream's peer freed a number too).
    let mut stranger = TcpStream::connect(stranger_listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut stranger_peer, _) = stranger_listener.accept().await.unwrap();
    assert!(
        stranger.as_raw_fd() == fd || stranger_peer.as_raw_fd() == fd,
        "the stranger's sockets did not get the number {fd} (release panicked: {})",
        dropped.is_err()
    );
    let mut echo = [0u8; 4];
    async fn ping(
        from: &mut TcpStream,
        to: &mut TcpStream,
        echo: &mut [u8; 4],
    ) -> std::io::Result<()> {
        from.write_all(b"ping").await?;
        tokio::time::timeout(Duration::from_secs(2), to.read_exact(echo))
            .await
            .map_err(|_| std::io::Error::other("no ping within 2 s"))??;
        Ok(())
    }
    // It works at first.
    ping(&mut stranger, &mut stranger_peer, &mut echo)
        .await
        .unwrap();
    // The dropped connection's age, and more, passes.
    tokio::time::sleep(age * 3).await;
    echo = [0u8; 4];
    let works = ping(&mut stranger, &mut stranger_peer, &mut echo).await;
    assert!(
        works.is_ok() && &echo == b"ping",
        "a connection that took the descriptor number of a stream whose release panicked \
         (release panicked: {}) was broken by the library: {works:?}; the dropped \
         connection's reason {:?}, stats {:?}",
        dropped.is_err(),
        handle.close_reason(),
        listener.stats()
    );
}
