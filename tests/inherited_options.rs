//! Socket options are set once, on the listening socket, where Linux copies them into
//! every socket it accepts: an accept costs no `setsockopt` for them. Each option is
//! checked on accepted sockets with `getsockopt`, against a plain-socket control showing
//! that the kernel itself carries them over.
#![cfg(all(target_os = "linux", not(tcp_hygiene_fallback)))]

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tcp_hygiene::{Builder, Keepalive};
use tokio::net::TcpStream;

const S: fn(u64) -> Duration = Duration::from_secs;

/// The options as `getsockopt` reads them off a socket.
#[derive(Debug, PartialEq)]
struct Options {
    keepalive: bool,
    idle: Duration,
    interval: Duration,
    retries: u32,
    user_timeout: Option<Duration>,
    nodelay: bool,
    linger: Option<Duration>,
}

fn options(sock: SockRef<'_>) -> Options {
    Options {
        keepalive: sock.keepalive().unwrap(),
        idle: sock.tcp_keepalive_time().unwrap(),
        interval: sock.tcp_keepalive_interval().unwrap(),
        retries: sock.tcp_keepalive_retries().unwrap(),
        user_timeout: sock.tcp_user_timeout().unwrap(),
        nodelay: sock.tcp_nodelay().unwrap(),
        linger: sock.linger().unwrap(),
    }
}

/// Options no kernel default has.
fn configured() -> Options {
    Options {
        keepalive: true,
        idle: S(37),
        interval: S(7),
        retries: 5,
        user_timeout: Some(Duration::from_millis(54_321)),
        nodelay: true,
        linger: Some(Duration::ZERO),
    }
}

fn std_listener() -> std::net::TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.into()
}

/// Control: options set on a plain listening socket are on the sockets it accepts.
#[tokio::test]
async fn the_kernel_copies_a_listeners_options_into_accepted_sockets() {
    let std = std_listener();
    let want = configured();
    let sock = SockRef::from(&std);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(want.idle)
            .with_interval(want.interval)
            .with_retries(want.retries),
    )
    .unwrap();
    sock.set_tcp_user_timeout(want.user_timeout).unwrap();
    sock.set_tcp_nodelay(true).unwrap();
    sock.set_linger(want.linger).unwrap();
    let listener = tokio::net::TcpListener::from_std(std).unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(options(SockRef::from(&accepted)), want);
    // And a fresh socket has none of them: the values come from the listener.
    let fresh = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let fresh = options(SockRef::from(&fresh));
    assert!(!fresh.keepalive && !fresh.nodelay && fresh.linger.is_none());
    assert_ne!(fresh.idle, want.idle);
}

/// The library sets the configured options on the listening socket, accepted sockets have
/// them, and they are not set again per connection: a change made to the listening socket
/// afterwards is what the next accepted socket has.
#[tokio::test]
async fn options_are_set_on_the_listener_not_per_connection() {
    let want = configured();
    let std = std_listener();
    // The same socket, to look at and change behind the library's back.
    let same = std.try_clone().unwrap();
    let mut b = Builder::new();
    b.keepalive(
        Keepalive::new()
            .with_idle(want.idle)
            .with_interval(want.interval)
            .with_retries(want.retries),
    )
    .user_timeout(want.user_timeout)
    .nodelay(true)
    .linger(want.linger);
    let listener = b
        .wrap(tokio::net::TcpListener::from_std(std).unwrap())
        .unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(
        options(SockRef::from(&same)),
        want,
        "set on the listening socket"
    );

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (stream, _) = listener.accept().await.unwrap();
        assert_eq!(options(SockRef::from(stream.get_ref())), want);
    }
    assert_eq!(listener.stats().socket_option_failures, 0);

    // Changed on the listening socket: a per-connection setsockopt would put the
    // configured values back; inheritance gives the listener's.
    let changed = SockRef::from(&same);
    changed
        .set_tcp_keepalive(&TcpKeepalive::new().with_time(S(41)))
        .unwrap();
    changed.set_tcp_nodelay(false).unwrap();
    clients.push(TcpStream::connect(addr).await.unwrap());
    let (stream, _) = listener.accept().await.unwrap();
    let got = options(SockRef::from(stream.get_ref()));
    assert_eq!(got.idle, S(41));
    assert!(!got.nodelay);
    assert_eq!(got.user_timeout, want.user_timeout);
}

/// With the defaults (keepalive and `TCP_USER_TIMEOUT` on, nodelay and linger left to the
/// kernel), accepted sockets get the library's defaults, and options left alone stay the
/// kernel's.
#[tokio::test]
async fn defaults_reach_accepted_sockets() {
    let listener = Builder::new().bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let got = options(SockRef::from(stream.get_ref()));
    let ka = Keepalive::DEFAULT;
    assert!(got.keepalive);
    assert_eq!(
        (got.idle, got.interval, got.retries),
        (ka.idle(), ka.interval(), ka.retries())
    );
    assert_eq!(got.user_timeout, Some(ka.worst_case()));
    assert!(!got.nodelay);
    assert_eq!(got.linger, None);
}
