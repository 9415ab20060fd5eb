//! The client's half: connections a `Connector` makes are supervised like accepted ones.
//! Each test has a plain-tokio control beside it, and checks the kernel's view (`ss` on
//! the client's side) as well as the library's reasons.
//!
//! Where the server must vanish, it runs in one network namespace and the client in
//! another (`support::netns`): the client's runtime runs on a thread that entered the
//! client's namespace, so that every socket the connector (or tonic) creates is there; a
//! `blackhole` qdisc on the server's interface drops every packet it would send. Those
//! tests need root: without it they skip with a line saying so, and fail instead under
//! `TCP_HYGIENE_SYSTEM_TESTS=1` (as in CI).

mod support;

use std::future::Future;
use std::io::ErrorKind;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::netns::{in_netns, NetPair};
use support::{reason_of, require, ss_output, wait_for, Need};
use tcp_hygiene::{
    Builder, CloseReason, ConnectionEvent, ConnectionEventKind, ConnectionState, TcpStream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEC: Duration = Duration::from_secs(1);

/// Client-side sockets (any local port) connected to remote port `port`, in `state`, as
/// `ss` shows them; in the namespace `ns` if given.
fn client_ss(ns: Option<&str>, port: u16, state: &str) -> Vec<String> {
    let filter = format!("( dport = :{port} )");
    let mut ss = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ss"]);
            c
        }
        None => Command::new("ss"),
    };
    ss.args(["-Htan", "state", state, &filter]);
    ss_output(ss)
}

/// Runs `body` on a 2-worker runtime whose threads are in the client's namespace of
/// `pair`: sockets created there (by the connector, tokio, tonic) are the client's.
fn in_client_ns<F, Fut>(pair: &Arc<NetPair>, body: F)
where
    F: FnOnce(Arc<NetPair>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    support::trace_init();
    let pair2 = pair.clone();
    in_netns(&pair.client_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(body(pair2));
        Ok(())
    })
    .expect("client runtime in its namespace");
}

/// Records every connection event.
fn recorder() -> (
    Arc<Mutex<Vec<ConnectionEvent>>>,
    impl Fn(&ConnectionEvent) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e: &ConnectionEvent| {
        sink.lock().unwrap().push(*e)
    })
}

/// A pool of 20 idle connections whose server closed them all: the pool sees it
/// (`is_peer_closed`, from the kernel's FIN, nobody reading), and the supervisor takes
/// every one out of `CLOSE_WAIT` within close_wait_timeout × 1.125 of the server's close,
/// each with `CloseWaitTimeout`. Control: 20 plain tokio streams, same server, same
/// treatment, still in `CLOSE_WAIT` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_the_server_closed_leave_close_wait() {
    require!(Need::Tool("ss"));
    support::trace_init();
    const N: usize = 20;
    let close_wait = 2 * SEC;
    let bound = close_wait.mul_f64(1.125);
    let (events, hook) = recorder();
    let connector = Builder::new()
        .close_wait_timeout(close_wait)
        .on_event(hook)
        .connector()
        .unwrap();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (port, control_port) = (
        server.local_addr().unwrap().port(),
        control_server.local_addr().unwrap().port(),
    );

    let mut pool: Vec<TcpStream> = Vec::new();
    let mut control_pool = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..N {
        pool.push(
            connector
                .connect(server.local_addr().unwrap())
                .await
                .unwrap(),
        );
        accepted.push(server.accept().await.unwrap().0);
        let control = tokio::net::TcpStream::connect(control_server.local_addr().unwrap())
            .await
            .unwrap();
        control_pool.push(control);
        accepted.push(control_server.accept().await.unwrap().0);
    }
    assert!(pool.iter().all(|s| !s.is_peer_closed()));
    let stats = connector.stats();
    assert_eq!(
        (stats.connected, stats.open, stats.accepted),
        (N as u64, N as u64, 0)
    );
    assert_eq!(connector.connections().len(), N);

    // The server closes every connection; nobody on the client reads.
    drop(accepted);
    let closed = Instant::now();
    let handles: Vec<_> = pool.iter().map(TcpStream::handle).collect();
    let seen = wait_for(SEC, "the pool sees every FIN", || {
        pool.iter().all(TcpStream::is_peer_closed)
    })
    .await;
    eprintln!("pool: every server FIN seen after {seen:?}");
    assert!(handles
        .iter()
        .all(|h| h.state() == ConnectionState::PeerClosed
            || h.close_reason() == Some(CloseReason::CloseWaitTimeout)));
    wait_for(SEC, "20 control sockets in CLOSE_WAIT", || {
        client_ss(None, control_port, "close-wait").len() == N
    })
    .await;

    // When each left CLOSE_WAIT (the library's flag, polled every 5 ms).
    let mut out_at: Vec<Option<Duration>> = vec![None; N];
    while out_at.iter().any(Option::is_none) && closed.elapsed() < bound + 3 * SEC {
        for (at, h) in out_at.iter_mut().zip(&handles) {
            if at.is_none() && h.close_reason().is_some() {
                *at = Some(closed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out_at: Vec<Duration> = out_at
        .into_iter()
        .map(|d| d.expect("every pooled connection closed"))
        .collect();
    let (first, last) = (out_at.iter().min().unwrap(), out_at.iter().max().unwrap());
    eprintln!(
        "CLOSE_WAIT ended {first:?}..{last:?} after the server's close (timeout {close_wait:?}, bound {bound:?})"
    );
    assert!(*first >= close_wait, "closed early: {first:?}");
    assert!(*last <= bound, "closed late: {last:?} > {bound:?}");
    for h in &handles {
        assert_eq!(
            h.close_reason(),
            Some(CloseReason::CloseWaitTimeout),
            "{h:?}"
        );
    }
    // The kernel's view: none of ours in CLOSE_WAIT (LAST_ACK then gone), all 20 of the
    // control's still there.
    wait_for(SEC, "no pooled socket in CLOSE_WAIT", || {
        client_ss(None, port, "close-wait").is_empty()
    })
    .await;
    assert_eq!(client_ss(None, control_port, "close-wait").len(), N);
    let stats = connector.stats();
    assert_eq!(stats.closed(CloseReason::CloseWaitTimeout), N as u64);

    // The pool drops what the server closed before reuse: nothing is left to reuse.
    pool.retain(|s| !s.is_peer_closed());
    assert!(pool.is_empty());
    wait_for(SEC, "every stream released", || {
        connector.stats().released == N as u64
    })
    .await;
    let events = events.lock().unwrap();
    let first_of = |id| events.iter().find(|e| e.id == id).map(|e| e.kind);
    for h in &handles {
        assert_eq!(first_of(h.id()), Some(ConnectionEventKind::Connected));
        assert!(events.iter().any(|e| e.id == h.id()
            && e.kind
                == ConnectionEventKind::Closed {
                    reason: CloseReason::CloseWaitTimeout
                }));
    }
    drop(control_pool);
}

/// A connect to an address whose answers are blackholed fails at connect_timeout with
/// `TimedOut` and `ConnectTimeout`, and leaves no `SYN_SENT` behind. Control: tokio's
/// connect to the same address is still in `SYN_SENT` long after (the kernel retries
/// for ~127 s).
#[test]
fn connect_to_a_blackholed_address_fails_at_connect_timeout() {
    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let pair = Arc::new(NetPair::new());
    let std_listener = pair.listen();
    let addr = std_listener.local_addr().unwrap();
    // The server's SYN-ACKs never reach the client.
    pair.pin_neighbours();
    pair.blackhole_server();
    in_client_ns(&pair, move |pair| async move {
        let connect_timeout = 2 * SEC;
        let connector = Builder::new()
            .connect_timeout(connect_timeout)
            .connector()
            .unwrap();
        let control = tokio::spawn(tokio::time::timeout(
            connect_timeout + 2 * SEC,
            tokio::net::TcpStream::connect(addr),
        ));
        let start = Instant::now();
        let err = connector.connect(addr).await.expect_err("blackholed");
        let took = start.elapsed();
        eprintln!("blackholed connect failed after {took:?} (timeout {connect_timeout:?}): {err}");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err:?}");
        assert_eq!(reason_of(&err), CloseReason::ConnectTimeout);
        assert!(took >= connect_timeout, "early: {took:?}");
        assert!(took <= connect_timeout + SEC / 2, "late: {took:?}");
        let stats = connector.stats();
        assert_eq!(stats.connect_errors, 1);
        assert_eq!(stats.closed(CloseReason::ConnectTimeout), 1);
        assert_eq!((stats.connected, stats.open), (0, 0));
        // The kernel's view: only the control's SYN_SENT is left.
        let syn_sent = client_ss(Some(&pair.client_ns), addr.port(), "syn-sent");
        assert_eq!(syn_sent.len(), 1, "{syn_sent:?}");
        // Control: still connecting when the test stops waiting for it.
        let control = control.await.unwrap();
        assert!(control.is_err(), "the control connected? {control:?}");
    });
    drop(std_listener);
}

/// A client writing to a server that vanished: `TCP_USER_TIMEOUT` (set by the
/// connector) fails the write within user_timeout + 1 s with `TimedOut`, reason
/// `UserTimeout`. Control: a plain tokio client writing the same way has no error by
/// then, its socket `ESTABLISHED` and retransmitting.
#[test]
fn client_writing_to_a_vanished_server_fails_within_user_timeout() {
    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let pair = Arc::new(NetPair::new());
    let std_listener = pair.listen();
    let addr = std_listener.local_addr().unwrap();
    pair.pin_neighbours();
    in_client_ns(&pair, move |pair| async move {
        let user_timeout = 2 * SEC;
        let budget = user_timeout + SEC;
        let connector = Builder::new()
            .user_timeout(user_timeout)
            .connector()
            .unwrap();
        let server = tokio::net::TcpListener::from_std(std_listener).unwrap();
        // The server reads everything it gets, until it vanishes.
        tokio::spawn(async move {
            loop {
                let (mut s, _) = server.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let mut client = connector.connect(addr).await.unwrap();
        let mut control = tokio::net::TcpStream::connect(addr).await.unwrap();
        let control_port = control.local_addr().unwrap().port();
        client.write_all(b"hello").await.unwrap();
        control.write_all(b"hello").await.unwrap();
        tokio::time::sleep(SEC / 5).await;
        let handle = client.handle();

        pair.blackhole_server();
        let vanished = Instant::now();
        let chunk = [7u8; 1024];
        let writer = |mut s: Box<dyn tokio::io::AsyncWrite + Send + Unpin>| async move {
            loop {
                if let Err(e) = s.write_all(&chunk).await {
                    return (e, vanished.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let control_task = tokio::spawn(tokio::time::timeout(
            budget + SEC,
            writer(Box::new(control)),
        ));
        let (err, took) = tokio::time::timeout(budget + 5 * SEC, writer(Box::new(client)))
            .await
            .expect("the write fails in time");
        eprintln!(
            "vanished server: write failed after {took:?} (user timeout {user_timeout:?}): {err}"
        );
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err:?}");
        assert!(took <= budget, "late: {took:?}");
        assert!(took >= user_timeout, "early: {took:?}");
        assert_eq!(handle.close_reason(), Some(CloseReason::UserTimeout));

        // Control: still ESTABLISHED (retransmitting), and its writes do not fail
        // (`timeout` gives up on them, which drops the stream).
        let established = client_ss(Some(&pair.client_ns), addr.port(), "established");
        assert!(
            established
                .iter()
                .any(|l| l.contains(&format!(":{control_port} "))),
            "control no longer ESTABLISHED: {established:?}"
        );
        let control = control_task.await.unwrap();
        assert!(control.is_err(), "the control's write failed: {control:?}");
    });
}

/// The same through tonic: a channel made with `Endpoint::connect_with_connector`, whose
/// server vanishes after one good RPC: the next RPC fails within user_timeout + 1 s.
/// Control: a channel from tonic's own connector still waits for its answer then.
#[cfg(feature = "tonic")]
#[test]
fn tonic_rpc_to_a_vanished_server_fails_within_user_timeout() {
    use tonic::transport::Endpoint;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    let pair = Arc::new(NetPair::new());
    let std_listener = pair.listen();
    let addr: std::net::SocketAddr = std_listener.local_addr().unwrap();
    pair.pin_neighbours();
    in_client_ns(&pair, move |pair| async move {
        let user_timeout = 2 * SEC;
        let budget = user_timeout + SEC;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(
            tokio::net::TcpListener::from_std(std_listener).unwrap(),
        );
        tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(health, incoming));
        let connector = Builder::new()
            .user_timeout(user_timeout)
            .connector()
            .unwrap();
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let mut client = HealthClient::new(
            endpoint
                .connect_with_connector(connector.clone())
                .await
                .unwrap(),
        );
        let mut control = HealthClient::new(endpoint.connect().await.unwrap());
        let request = || HealthCheckRequest {
            service: String::new(),
        };
        client.check(request()).await.expect("first RPC");
        control.check(request()).await.expect("control's first RPC");
        assert_eq!(connector.stats().open, 1);

        pair.blackhole_server();
        let vanished = Instant::now();
        let control_rpc = tokio::spawn(async move {
            tokio::time::timeout(budget + SEC, control.check(request())).await
        });
        let status = tokio::time::timeout(budget + 5 * SEC, client.check(request()))
            .await
            .expect("the RPC fails in time")
            .expect_err("no answer from a vanished server");
        let took = vanished.elapsed();
        eprintln!("tonic: RPC failed after {took:?} (user timeout {user_timeout:?}): {status}");
        assert!(took <= budget, "late: {took:?}");
        assert!(took >= user_timeout, "early: {took:?}");
        let stats = connector.stats();
        assert_eq!(stats.closed(CloseReason::UserTimeout), 1, "{stats:?}");
        let control = control_rpc.await.unwrap();
        assert!(control.is_err(), "the control's RPC ended: {control:?}");
        let _ = pair;
    });
}

/// A client that closed first (its FIN went out and was acknowledged) while the server
/// never closes: out of `FIN_WAIT_2` at fin_wait_timeout, reason `FinWaitTimeout`, held
/// or dropped (then `TCP_LINGER2`). Control: plain tokio streams, same treatment, still in
/// `FIN_WAIT_2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_closed_first_is_not_left_in_fin_wait_2() {
    require!(Need::Tool("ss"));
    support::trace_init();
    let fin_wait = SEC;
    let connector = Builder::new()
        .fin_wait_timeout(fin_wait)
        .connector()
        .unwrap();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (port, control_port) = (
        server.local_addr().unwrap().port(),
        control_server.local_addr().unwrap().port(),
    );
    // Held, and dropped right after its shutdown; the same for the control.
    let mut held = connector
        .connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let mut dropped = connector
        .connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let mut accepted = vec![
        server.accept().await.unwrap().0,
        server.accept().await.unwrap().0,
    ];
    let mut control_held = tokio::net::TcpStream::connect(control_server.local_addr().unwrap())
        .await
        .unwrap();
    let mut control_dropped = tokio::net::TcpStream::connect(control_server.local_addr().unwrap())
        .await
        .unwrap();
    accepted.push(control_server.accept().await.unwrap().0);
    accepted.push(control_server.accept().await.unwrap().0);
    let handle = held.handle();

    let fin = Instant::now();
    held.shutdown().await.unwrap();
    dropped.shutdown().await.unwrap();
    drop(dropped);
    control_held.shutdown().await.unwrap();
    control_dropped.shutdown().await.unwrap();
    drop(control_dropped);
    assert_eq!(handle.state(), ConnectionState::LocallyClosed);
    wait_for(SEC, "ours and the control's in FIN_WAIT_2", || {
        client_ss(None, port, "fin-wait-2").len() == 2
            && client_ss(None, control_port, "fin-wait-2").len() == 2
    })
    .await;

    wait_for(fin_wait + 3 * SEC, "closed by the library", || {
        handle.close_reason().is_some()
    })
    .await;
    let since_fin = fin.elapsed();
    wait_for(2 * SEC, "none of ours in FIN_WAIT_2", || {
        client_ss(None, port, "fin-wait-2").is_empty()
    })
    .await;
    let gone = fin.elapsed();
    eprintln!("FIN_WAIT_2: held one closed {since_fin:?}, both gone from ss {gone:?} after our FIN (timeout {fin_wait:?})");
    assert_eq!(handle.close_reason(), Some(CloseReason::FinWaitTimeout));
    assert!(since_fin >= fin_wait, "early: {since_fin:?}");
    assert!(since_fin <= fin_wait + SEC / 2, "late: {since_fin:?}");
    // The dropped one is the kernel's orphan, with TCP_LINGER2 = fin_wait_timeout
    // (whole seconds), checked at the kernel's own granularity.
    assert!(gone <= fin_wait + 2 * SEC, "late: {gone:?}");
    assert_eq!(client_ss(None, control_port, "fin-wait-2").len(), 2);
    drop((held, control_held, accepted));
}

/// Bad configuration is an error naming the option, never a panic.
#[tokio::test]
async fn a_zero_connect_timeout_is_a_config_error() {
    for bad in [Duration::ZERO, Duration::from_micros(10)] {
        let err = Builder::new()
            .connect_timeout(bad)
            .connector()
            .expect_err("invalid connect_timeout");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let config = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<tcp_hygiene::ConfigError>())
            .expect("a ConfigError inside");
        assert_eq!(config.option(), "connect_timeout", "{err}");
        assert!(err.to_string().contains("connect_timeout"), "{err}");
    }
    // `None` leaves it to the kernel; the server-only options read `None`.
    let connector = Builder::new()
        .connect_timeout(None)
        .first_byte_timeout(SEC)
        .max_connections_per_ip(1)
        .connector()
        .unwrap();
    assert_eq!(connector.config().connect_timeout(), None);
    assert_eq!(connector.config().first_byte_timeout(), None);
    assert_eq!(connector.config().max_connections_per_ip(), None);
    assert_eq!(
        Builder::new().build().unwrap().connect_timeout(),
        Some(Builder::DEFAULT_CONNECT_TIMEOUT)
    );
}

/// A refused connect is an error of its own kind, counted, with no reason of ours; the
/// connection that works afterwards is counted as connected.
#[tokio::test]
async fn a_refused_connect_is_counted() {
    support::trace_init();
    let connector = Builder::new().connector().unwrap();
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let err = connector.connect(addr).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");
    let stats = connector.stats();
    assert_eq!((stats.connect_errors, stats.connected), (1, 0));
    assert_eq!(stats.closed_total(), 0);
}

/// The `grpc_client` example, run inside the client's namespace against a health server
/// that then vanishes: it reports the failed RPC within user_timeout + 1 s of the
/// vanishing (plus its pause between RPCs), with `user_timeout` as the connector's close
/// reason, and exits with 1. Control: the same example with `--plain` (tonic's own
/// connector) reports nothing by then.
#[cfg(feature = "tonic")]
#[test]
fn grpc_client_example_fails_within_user_timeout_when_its_server_vanishes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;

    require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
    support::trace_init();
    let pair = NetPair::new();
    let std_listener = pair.listen();
    let addr = std_listener.local_addr().unwrap();
    pair.pin_neighbours();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _server = rt.spawn(async move {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(
            tokio::net::TcpListener::from_std(std_listener).unwrap(),
        );
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(health, incoming)
            .await;
    });
    let user_timeout = 2 * SEC;
    let every = Duration::from_millis(200);
    let binary = support::example::example_binary("grpc_client");
    let run = |plain: bool| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &pair.client_ns])
            .arg(&binary)
            .arg(format!("http://{addr}"))
            .args(["--user-timeout-ms", &user_timeout.as_millis().to_string()])
            .args(["--every-ms", &every.as_millis().to_string()]);
        if plain {
            cmd.arg("--plain");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grpc_client");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        (child, rx)
    };
    let (mut child, lines) = run(false);
    let (mut control, control_lines) = run(true);
    let first_ok = |rx: &mpsc::Receiver<(Instant, String)>| loop {
        let (_, line) = rx.recv_timeout(30 * SEC).expect("an RPC answered");
        if line.starts_with("rpc ok") {
            break;
        }
    };
    first_ok(&lines);
    first_ok(&control_lines);

    pair.blackhole_server();
    let vanished = Instant::now();
    let budget = user_timeout + SEC + every;
    let mut output = Vec::new();
    let failed_at = loop {
        let (at, line) = lines
            .recv_timeout(budget + 5 * SEC)
            .unwrap_or_else(|e| panic!("no failure reported: {e}; {output:?}"));
        output.push(line.clone());
        if line.starts_with("rpc failed") {
            break at;
        }
    };
    let took = failed_at - vanished;
    let closed = lines.recv_timeout(SEC).expect("close reasons").1;
    eprintln!("grpc_client: {output:?} {took:?} after the server vanished; {closed}");
    assert!(took <= budget, "late: {took:?} > {budget:?}");
    assert!(took >= user_timeout, "early: {took:?}");
    assert!(closed.contains("user_timeout=1"), "{closed}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");

    // Control: nothing more since its last good RPC before the vanishing.
    std::thread::sleep(budget.saturating_sub(vanished.elapsed()));
    let late: Vec<String> = control_lines
        .try_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("rpc failed"))
        .collect();
    assert!(late.is_empty(), "the control's RPC failed: {late:?}");
    assert!(control.try_wait().unwrap().is_none(), "the control exited");
    let _ = control.kill();
    let _ = control.wait();
}

/// hyper-util's legacy `Client` over a `Connector`, against a server that closes each
/// idle connection soon (a short keep-alive timeout): every response carries its
/// connection's `ConnectionHandle`; the pool drops each connection the server closed
/// before reuse (a new one per request after a pause), and none is left in `CLOSE_WAIT`.
/// Control: the same requests through hyper-util's own `HttpConnector` beside it.
#[cfg(feature = "hyper")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_pool_over_a_connector_drops_what_the_server_closed() {
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tcp_hygiene::ConnectionHandle;

    require!(Need::Tool("ss"));
    support::trace_init();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = server.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"hello"),
                    )))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    let connector = Builder::new().connector().unwrap();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector.clone());
    let control =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(HttpConnector::new());
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let mut handles: Vec<ConnectionHandle> = Vec::new();
    for _ in 0..3 {
        let response = client.get(uri.clone()).await.unwrap();
        let handle = response
            .extensions()
            .get::<ConnectionHandle>()
            .cloned()
            .expect("the response carries its connection's handle");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        let control_response = control.get(uri.clone()).await.unwrap();
        control_response.into_body().collect().await.unwrap();
        // The server closes the idle connection meanwhile; the supervisor sees it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(handle.is_peer_closed(), "{handle:?}");
        handles.push(handle);
    }
    let ids: std::collections::HashSet<_> = handles.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), 3, "a connection the server closed was reused");
    let stats = connector.stats();
    assert_eq!((stats.connected, stats.connect_errors), (3, 0), "{stats:?}");
    wait_for(
        SEC,
        "nothing of ours or the control's in CLOSE_WAIT",
        || client_ss(None, addr.port(), "close-wait").is_empty(),
    )
    .await;
    wait_for(SEC, "every pooled stream released", || {
        connector.stats().open == 0
    })
    .await;
}
