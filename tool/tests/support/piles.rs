//! Real piles of TCP states to count: on loopback, and in network namespaces whose
//! server or client has lost its packets (a `blackhole` qdisc). Each builder waits until
//! `ss` shows what it made, and the returned value holds every socket open.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::census::{n, ss_here, ss_view, wait_until};
use super::netns::NetPair;

/// How long a state may take to appear after the packets that cause it.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);
/// How long the piles made first have lingered when the census is taken, at least.
pub(crate) const FIRST_PILES_AGE: Duration = Duration::from_millis(1500);

/// Sleeps until the piles made at `made` are past the diagnosis's age floor (with a
/// margin), so that the census diagnoses them.
pub(crate) fn past_the_age_floor(made: Instant) {
    let until = made + tcp_hygiene_cli::AGE_FLOOR + Duration::from_millis(300);
    thread::sleep(until.saturating_duration_since(Instant::now()));
}

/// Writes to `server` until its send buffer is full (the client does not read).
pub(crate) fn fill_send_buffer(server: &TcpStream) {
    server.set_nonblocking(true).unwrap();
    let chunk = [7u8; 65536];
    let mut writer = server;
    loop {
        match writer.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the send buffer: {e}"),
        }
    }
}

/// A client with a small receive buffer, so that a server's writes fill both buffers fast.
pub(crate) fn small_window_client(to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Piles of every loopback-reachable state on one listening port, with what the test
/// knows about them.
pub(crate) struct LoopbackPiles {
    pub(crate) port: u16,
    /// When the first piles (FIN_WAIT_2, TIME_WAIT, FIN_WAIT_1) began to be made.
    pub(crate) first_started: Instant,
    /// When the CLOSE_WAIT clients, which sent data before those piles, sent their FIN.
    pub(crate) close_wait_fin: Instant,
    _held: Vec<TcpStream>,
    _listener: TcpListener,
}

pub(crate) const EXPECTED_LOOPBACK: [(&str, u64); 6] = [
    ("LISTEN", 1),
    ("ESTABLISHED", 2),
    ("CLOSE_WAIT", 3),
    ("FIN_WAIT_1", 2),
    ("FIN_WAIT_2", 2),
    ("TIME_WAIT", 2),
];

/// On `ip`: 2 ESTABLISHED; 3 CLOSE_WAIT whose clients sent data, then 1.5 s later their
/// FIN; 2 FIN_WAIT_1 behind a zero window (one held, one orphaned); 2 FIN_WAIT_2 (one
/// held, one orphaned); 2 TIME_WAIT. Orphans: 2.
pub(crate) fn loopback_piles(ip: IpAddr) -> LoopbackPiles {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let accept = |client: TcpStream, held: &mut Vec<TcpStream>| {
        let (server, _) = listener.accept().unwrap();
        held.push(client);
        server
    };
    // ESTABLISHED.
    for _ in 0..2 {
        let server = accept(TcpStream::connect(addr).unwrap(), &mut held);
        held.push(server);
    }
    // CLOSE_WAIT, part one: the clients send data now, their FIN later.
    let mut close_wait_clients = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"x").unwrap();
        let (server, _) = listener.accept().unwrap();
        held.push(server);
        close_wait_clients.push(client);
    }
    let first_started = Instant::now();
    // FIN_WAIT_2: the server shuts down writing (held) or closes (orphaned); the client
    // reads nothing and keeps its side open.
    let server = accept(TcpStream::connect(addr).unwrap(), &mut held);
    server.shutdown(Shutdown::Write).unwrap();
    held.push(server);
    drop(accept(TcpStream::connect(addr).unwrap(), &mut held));
    // TIME_WAIT: the server closes first, the client after reading the EOF.
    for _ in 0..2 {
        let mut client = TcpStream::connect(addr).unwrap();
        drop(listener.accept().unwrap().0);
        assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    }
    // FIN_WAIT_1: the client never reads, the server's FIN waits behind a full window.
    for orphan in [false, true] {
        let server = accept(small_window_client(addr), &mut held);
        SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        fill_send_buffer(&server);
        if orphan {
            drop(server);
        } else {
            server.shutdown(Shutdown::Write).unwrap();
            held.push(server);
        }
    }
    // CLOSE_WAIT, part two.
    // From the youngest of them, however long making them took on a loaded machine.
    thread::sleep(FIRST_PILES_AGE);
    for client in close_wait_clients {
        client.shutdown(Shutdown::Write).unwrap();
        held.push(client);
    }
    let close_wait_fin = Instant::now();
    let port = addr.port();
    wait_until(SETTLE, "the loopback piles", || {
        let view = ss_here(port);
        let ok = EXPECTED_LOOPBACK
            .iter()
            .all(|(s, count)| n(&view, s) == *count)
            && view.states.len() == EXPECTED_LOOPBACK.len()
            && view.orphans == 2;
        (ok, view)
    });
    LoopbackPiles {
        port,
        first_started,
        close_wait_fin,
        _held: held,
        _listener: listener,
    }
}

/// A port in namespaces whose server has lost its packets: two FIN_WAIT_1 (our FIN
/// lost), two CLOSING (our FIN lost, the client's FIN arrived), one of each held by the
/// server and one orphaned, and three SYN_RECV (our SYN-ACKs lost).
pub(crate) struct LostServerPackets {
    pub(crate) pair: NetPair,
    pub(crate) port: u16,
    /// When the last handshake began.
    pub(crate) made: Instant,
    _held: Vec<TcpStream>,
    _connecting: Vec<Socket>,
    _listener: TcpListener,
}

/// A pair of namespaces with pinned neighbours and a blocking listener in the server's.
pub(crate) fn pinned_pair_listening() -> (NetPair, TcpListener, SocketAddr) {
    let pair = NetPair::new();
    pair.pin_neighbours();
    let listener = pair.listen();
    listener.set_nonblocking(false).unwrap();
    let addr = listener.local_addr().unwrap();
    (pair, listener, addr)
}

pub(crate) fn lost_server_packets() -> LostServerPackets {
    let (pair, listener, addr) = pinned_pair_listening();
    let connections: Vec<(TcpStream, TcpStream)> = (0..4)
        .map(|_| {
            let client = pair.connect(addr);
            (client, listener.accept().unwrap().0)
        })
        .collect();
    pair.blackhole_server();
    let mut held = Vec::new();
    for (i, (client, server)) in connections.into_iter().enumerate() {
        let (closing, orphan) = (i >= 2, i % 2 == 1);
        if orphan {
            drop(server);
        } else {
            server.shutdown(Shutdown::Write).unwrap();
            held.push(server);
        }
        if closing {
            client.shutdown(Shutdown::Write).unwrap();
        }
        held.push(client);
    }
    let connecting = (0..3).map(|_| pair.start_connect(addr)).collect();
    let made = Instant::now();
    let port = addr.port();
    wait_until(SETTLE, "FIN_WAIT_1, CLOSING and SYN_RECV", || {
        let view = ss_view(pair.server_command("ss"), port);
        let ok = n(&view, "FIN_WAIT_1") == 2
            && n(&view, "CLOSING") == 2
            && n(&view, "SYN_RECV") == 3
            && view.orphans == 2;
        (ok, view)
    });
    LostServerPackets {
        pair,
        port,
        made,
        _held: held,
        _connecting: connecting,
        _listener: listener,
    }
}

/// A port in namespaces whose client vanished after its FIN: two LAST_ACK, one held by
/// the server (shutdown) and one orphaned (closed).
pub(crate) struct VanishedClient {
    pub(crate) pair: NetPair,
    pub(crate) port: u16,
    /// Just before the server closed (and sent the FIN that is never acknowledged).
    pub(crate) closed: Instant,
    _held: Vec<TcpStream>,
    _listener: TcpListener,
}

pub(crate) fn vanished_client() -> VanishedClient {
    let (pair, listener, addr) = pinned_pair_listening();
    let port = addr.port();
    let mut held = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let client = pair.connect(addr);
        servers.push(listener.accept().unwrap().0);
        client.shutdown(Shutdown::Write).unwrap();
        held.push(client);
    }
    wait_until(SETTLE, "2 CLOSE_WAIT", || {
        let view = ss_view(pair.server_command("ss"), port);
        (n(&view, "CLOSE_WAIT") == 2, view)
    });
    pair.vanish_client();
    let closed = Instant::now();
    let orphan = servers.pop().unwrap();
    drop(orphan);
    let server = servers.pop().unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    held.push(server);
    wait_until(SETTLE, "2 LAST_ACK, 1 orphaned", || {
        let view = ss_view(pair.server_command("ss"), port);
        (n(&view, "LAST_ACK") == 2 && view.orphans == 1, view)
    });
    VanishedClient {
        pair,
        port,
        closed,
        _held: held,
        _listener: listener,
    }
}
