//! The `axum` integration, end to end: the `axum_server` example driven by real `curl`
//! and raw sockets on 127.0.0.1, with the kernel's view from `ss`; and `ConnectInfo`
//! in-process.
//!
//! What hyper does by itself and what the library adds: after a request without a body,
//! hyper keeps reading and drops the handler when the client half-closes, so a stuck
//! `GET` handler does not leak. A request whose body the handler never reads is
//! different: hyper stops reading until the handler asks for the body, never sees the
//! FIN, and over tokio's listener the socket stays in `CLOSE_WAIT` as long as the handler
//! hangs. The control test shows that leak with the supervisor's timeout disabled.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use support::example::{curl, Server};
use support::http::{closed_within, get_ok};
use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, ConnectionHandle};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CLOSE_WAIT_MS: u64 = 500;
const IDLE_MS: u64 = 1_000;
/// Slack for a noisy 2-core VM on top of every timeout.
const SLACK: Duration = Duration::from_secs(3);

/// A `POST /hang` whose body (9 bytes announced, 3 sent) never completes: axum's handler
/// does not read it, so hyper does not read the socket either.
const UNFINISHED_POST: &[u8] = b"POST /hang HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc";

fn start(args: &[&str]) -> Server {
    Server::start("axum_server", args)
}

/// Bad flags print the usage and exit 2; `--help` prints it and exits 0.
#[test]
fn bad_flags_print_usage_and_exit_2() {
    let binary = support::example::example_binary("axum_server");
    for args in [
        &["--bogus", "1"][..],
        &[],
        &["--listen"],
        &["--listen", "nope"],
        &["--listen", "127.0.0.1:0", "--idle-timeout-ms", "soon"],
    ] {
        let out = std::process::Command::new(&binary)
            .args(args)
            .output()
            .expect("run axum_server");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: printed on stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("usage: axum_server --listen ADDR"),
            "{args:?}: {stderr}"
        );
    }
    let out = std::process::Command::new(&binary)
        .arg("--help")
        .output()
        .expect("run axum_server");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: axum_server"));
}

#[tokio::test]
async fn curl_gets_ok_and_connection_info() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    // The serve answers a client that half-closes (legal HTTP/1), so a client that left
    // looks the same until `close_wait_timeout` ends the wait.
    let server = start(&["--close-wait-timeout-ms", "500"]);
    assert_eq!(curl(&[&server.url()]), "ok");
    assert_eq!(curl(&["--http1.1", &format!("{}/", server.url())]), "ok");
    let info = curl(&[&format!("{}/conn", server.url())]);
    assert!(
        info.starts_with("id=") && info.contains("peer=127.0.0.1:"),
        "ConnectInfo<ConnectionHandle>: {info}"
    );

    // /hang really hangs: curl gives up (exit 28, timeout).
    let out = std::process::Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "1",
            &format!("{}/hang", server.url()),
        ])
        .output()
        .expect("curl");
    assert_eq!(out.status.code(), Some(28), "curl /hang should time out");
    // curl closed its socket; nothing lingers on the server past the close-wait bound.
    wait_for(SLACK, "no CLOSE_WAIT after curl left /hang", || {
        ss_count(server.port(), "close-wait") == 0
    })
    .await;
}

/// A client that requests `/hang` and half-closes, or vanishes, leaves no socket in
/// `CLOSE_WAIT` beyond `close_wait_timeout`, whether or not hyper reads the socket.
#[tokio::test]
async fn stuck_handler_does_not_leave_close_wait() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    let close_wait = Duration::from_millis(CLOSE_WAIT_MS);
    let server = start(&["--close-wait-timeout-ms", &CLOSE_WAIT_MS.to_string()]);
    let port = server.port();

    // 1. GET /hang, then shutdown(Write): hyper itself notices the FIN and closes.
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await.unwrap();
    let fin = Instant::now();
    closed_within(&mut client, close_wait + SLACK).await;
    wait_for(close_wait + SLACK, "GET /hang: no CLOSE_WAIT", || {
        ss_count(port, "close-wait") == 0
    })
    .await;
    eprintln!(
        "GET /hang + half-close: closed {:?} after FIN",
        fin.elapsed()
    );
    drop(client);

    // 2. POST /hang with an unfinished body, then shutdown(Write): nobody reads, the
    //    socket enters CLOSE_WAIT, and the supervisor closes it after the timeout.
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(UNFINISHED_POST).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await.unwrap();
    let fin = Instant::now();
    wait_for(SLACK, "POST /hang: server socket in CLOSE_WAIT", || {
        ss_count(port, "close-wait") == 1
    })
    .await;
    wait_for(
        close_wait + SLACK,
        "POST /hang + half-close: CLOSE_WAIT reaped",
        || ss_count(port, "close-wait") == 0,
    )
    .await;
    let reaped = fin.elapsed();
    eprintln!("POST /hang + half-close: CLOSE_WAIT reaped {reaped:?} after FIN");
    assert!(
        reaped >= close_wait,
        "reaped before close_wait_timeout: {reaped:?}"
    );
    // The client sees the server's FIN.
    closed_within(&mut client, SLACK).await;
    drop(client);

    // 3. POST /hang with an unfinished body, then the client vanishes (closes fully).
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(UNFINISHED_POST).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    let fin = Instant::now();
    wait_for(
        SLACK,
        "vanished client: server socket in CLOSE_WAIT",
        || ss_count(port, "close-wait") == 1,
    )
    .await;
    wait_for(
        close_wait + SLACK,
        "vanished client: CLOSE_WAIT reaped",
        || ss_count(port, "close-wait") == 0,
    )
    .await;
    let reaped = fin.elapsed();
    eprintln!("POST /hang + vanish: CLOSE_WAIT reaped {reaped:?} after FIN");
    assert!(
        reaped >= close_wait,
        "reaped before close_wait_timeout: {reaped:?}"
    );

    // The server is still fine.
    assert_eq!(curl(&[&server.url()]), "ok");
}

/// Control: the same unfinished `POST /hang` with the supervisor's `CLOSE_WAIT` timeout
/// disabled stays in `CLOSE_WAIT`, as it would over tokio's listener. This is what the
/// test above proves the library fixes.
#[tokio::test]
async fn control_without_close_wait_timeout_the_socket_leaks() {
    require!(Need::Tool("ss"));
    let server = start(&["--close-wait-timeout-ms", "0"]);
    let port = server.port();
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(UNFINISHED_POST).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await.unwrap();
    wait_for(SLACK, "control: server socket in CLOSE_WAIT", || {
        ss_count(port, "close-wait") == 1
    })
    .await;
    // Four times the timeout used above, and still there.
    tokio::time::sleep(Duration::from_millis(4 * CLOSE_WAIT_MS)).await;
    assert_eq!(ss_count(port, "close-wait"), 1, "the control should leak");
}

/// An idle HTTP/1.1 keep-alive connection is closed after `idle_timeout` (the client sees
/// EOF); one that sends a request every `idle_timeout / 3` stays open and keeps its
/// connection (same id), until it goes idle too.
#[tokio::test]
async fn idle_keep_alive_is_closed_and_busy_keep_alive_is_not() {
    let idle = Duration::from_millis(IDLE_MS);
    let server = start(&["--idle-timeout-ms", &IDLE_MS.to_string()]);

    let idle_client = async {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(get_ok(&mut client, "/").await, "ok");
        let last_byte = Instant::now();
        let closed = closed_within(&mut client, idle + SLACK).await;
        closed - last_byte
    };

    let busy_client = async {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        let first = get_ok(&mut client, "/conn").await;
        let started = Instant::now();
        let mut requests = 1;
        while started.elapsed() < idle * 3 {
            tokio::time::sleep(idle / 3).await;
            let info = get_ok(&mut client, "/conn").await;
            assert_eq!(info, first, "the keep-alive connection was replaced");
            requests += 1;
        }
        let active_for = started.elapsed();
        let last_byte = Instant::now();
        let closed = closed_within(&mut client, idle + SLACK).await;
        (requests, active_for, closed - last_byte)
    };

    let (idle_closed, (requests, active_for, busy_closed)) = tokio::join!(idle_client, busy_client);
    eprintln!("idle keep-alive closed {idle_closed:?} after its last byte");
    eprintln!("busy keep-alive: {requests} requests over {active_for:?} on one connection, then closed {busy_closed:?} after its last byte");
    // The kernel-side clock starts at the last byte acknowledged, a little before the
    // client finished reading; allow 100 ms for that.
    let early = idle - Duration::from_millis(100);
    assert!(
        idle_closed >= early,
        "idle connection closed early: {idle_closed:?}"
    );
    assert!(
        idle_closed <= idle + SLACK,
        "idle connection closed late: {idle_closed:?}"
    );
    assert!(requests >= 8, "only {requests} requests");
    assert!(
        active_for >= idle * 3,
        "busy connection lived {active_for:?}"
    );
    assert!(
        busy_closed >= early,
        "busy connection closed early once idle: {busy_closed:?}"
    );
}

/// `ConnectInfo<ConnectionHandle>`: a handler that never reads the request body learns
/// from the handle that the client has left, within the kernel watcher's latency.
#[tokio::test]
async fn connect_info_handle_sees_the_client_leave() {
    let listener = Builder::new().bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hang",
        post(move |ConnectInfo(conn): ConnectInfo<ConnectionHandle>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(("started", conn.is_peer_closed()));
                conn.peer_closed().await;
                let _ = tx.send(("peer closed", conn.is_peer_closed()));
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnectionHandle>(),
        )
        .await
    });

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(UNFINISHED_POST).await.unwrap();
    let started = tokio::time::timeout(SLACK, rx.recv())
        .await
        .expect("handler ran");
    assert_eq!(started, Some(("started", false)));
    client.shutdown().await.unwrap();
    let fin = Instant::now();
    let seen = tokio::time::timeout(SLACK, rx.recv())
        .await
        .expect("peer_closed resolved");
    eprintln!("handler saw the client leave {:?} after FIN", fin.elapsed());
    assert_eq!(seen, Some(("peer closed", true)));
    server.abort();
}

/// `ConnectInfo<SocketAddr>` (and `ConnectInfo<ConnectionHandle>`) through axum's
/// `tap_io` wrapper, the documented way around the orphan rule.
#[tokio::test]
async fn connect_info_socket_addr_through_tap_io() {
    let listener = Builder::new().bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|_| {}),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    let body = get_ok(&mut client, "/").await;
    assert_eq!(body, client.local_addr().unwrap().to_string());
    server.abort();

    let listener = Builder::new().bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/",
        get(
            |ConnectInfo(conn): ConnectInfo<ConnectionHandle>| async move {
                conn.peer_addr().to_string()
            },
        ),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|_| {}),
            app.into_make_service_with_connect_info::<ConnectionHandle>(),
        )
        .await
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    let body = get_ok(&mut client, "/").await;
    assert_eq!(body, client.local_addr().unwrap().to_string());
    server.abort();
}

/// Issue 15, defect 3: `min_receive_rate` closed a connection whose handler was merely
/// slow, under `axum::serve` (axum's own server over the supervised listener) and under
/// `serve_connection` over the listener: hyper keeps a read pending while the handler
/// computes, and the last thing that moved was the request, so the connection looked as
/// if the client owed data. The client owes nothing once its request (no body) is sent:
/// a handler that takes 2 s answers in full under a rate of 100 B/s with a 500 ms grace.
/// (It was closed `SlowReceive` at 501 ms, with no response.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_is_not_cut_by_min_receive_rate_under_axum_serve_or_serve_connection() {
    use std::future::IntoFuture;
    let grace = Duration::from_millis(500);
    let app = || {
        Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "done"
            }),
        )
    };
    let mut failures = Vec::new();
    for way in ["axum::serve", "serve_connection"] {
        let listener = support::listener(
            Builder::new().min_receive_rate(tcp_hygiene::MinDataRate::new(100, grace)),
        )
        .await;
        let addr = listener.local_addr().unwrap();
        let controller = listener.controller();
        let server = match way {
            "axum::serve" => tokio::spawn(axum::serve(listener, app()).into_future()),
            _ => tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await?;
                    let service = hyper_util::service::TowerToHyperService::new(app());
                    tokio::spawn(tcp_hygiene::integration::hyper::serve_connection(
                        stream, service,
                    ));
                }
            }),
        };
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let response = support::http::try_read_response(&mut client, Duration::from_secs(10)).await;
        let slow_receive = controller
            .stats()
            .closed(tcp_hygiene::CloseReason::SlowReceive);
        match response {
            Ok((status, body)) if status.starts_with("HTTP/1.1 200") && body == "done" => {}
            Ok((status, body)) => failures.push(format!("{way}: {status} {body:?}")),
            Err(how) => failures.push(format!(
                "{way}: no response, the connection ended: {how}; SlowReceive closes: {slow_receive}"
            )),
        }
        server.abort();
    }
    assert!(
        failures.is_empty(),
        "a 2 s handler under min_receive_rate 100 B/s, grace {grace:?}:\n{}",
        failures.join("\n")
    );
}
