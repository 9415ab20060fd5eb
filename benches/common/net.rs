//! Sockets set up the same way for every contender.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

/// What the library sets on every accepted socket, set by hand on a raw one, so that the
/// contenders differ only in the code around the socket.
pub(crate) fn set_like_hygiene(
    socket: SockRef<'_>,
    keepalive: tcp_hygiene::Keepalive,
    user_timeout: Duration,
) {
    let ka = TcpKeepalive::new()
        .with_time(keepalive.idle())
        .with_interval(keepalive.interval())
        .with_retries(keepalive.retries());
    socket.set_tcp_keepalive(&ka).expect("keepalive");
    socket
        .set_tcp_user_timeout(Some(user_timeout))
        .expect("user timeout");
}

/// A blocking listener on a free loopback port with a listen backlog of `backlog` (the
/// kernel caps it at `net.core.somaxconn`): with `std`'s and tokio's 128, a client that
/// connects faster than the server accepts has SYNs dropped, and each drop stalls it for
/// a second.
pub(crate) fn listener_with_backlog(backlog: i32) -> std::net::TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("reuseaddr");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(backlog).expect("listen");
    socket.into()
}
