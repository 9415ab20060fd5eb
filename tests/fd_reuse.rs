//! Closing from outside must never hit the wrong socket. The kernel reuses the lowest free
//! descriptor number at once, so while the supervisor is closing some connections, the
//! application drops others and new connections get their numbers. If the supervisor ever
//! acted on a number after the application closed it, it would shut down a stranger.
//!
//! Thousands of connections churn (accepted, echoed, dropped by the application) while
//! the supervisor is busy with two kinds of stuck connections whose timeouts fire at the
//! same moment the application drops some of them: half-closed clients the handler holds
//! for a random time around `close_wait_timeout`, and silent clients around
//! `first_byte_timeout`. Afterwards every innocent connection still echoes byte for byte
//! and has no close reason, every churned echo was intact, and the process's descriptor
//! count returns to its baseline.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{open_fds, wait_for};
use support::{require, Need};
use tcp_hygiene::{
    Builder, CloseReason, ConnectionHandle, ConnectionState, KernelState, TcpListener,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_millis(300);
const BATCHES: usize = 30;
const CHURN_PER_BATCH: usize = 100;
const STUCK_PER_BATCH: usize = 10;
const SILENT_PER_BATCH: usize = 10;
const INNOCENTS: usize = 50;
const NEW_INNOCENTS_PER_BATCH: usize = 5;
const ALL_INNOCENTS: usize = INNOCENTS + BATCHES * NEW_INNOCENTS_PER_BATCH;
const ECHO_LEN: usize = 63;

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
fn rand(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len).map(|_| rand(&mut s) as u8).collect()
}

/// A random duration in `[lo, hi)`.
fn between(seed: &mut u64, lo: Duration, hi: Duration) -> Duration {
    let span = (hi - lo).as_micros() as u64;
    lo + Duration::from_micros(rand(seed) % span)
}

#[derive(Default)]
struct Server {
    /// Every connection's handle, kept for the whole run (as a metrics registry might):
    /// the per-connection state outlives the stream, so only the library's descriptor
    /// guard stands between the supervisor and a reused descriptor number.
    all: Mutex<Vec<ConnectionHandle>>,
    innocents: Mutex<Vec<ConnectionHandle>>,
    wrong: Mutex<Vec<String>>,
    handlers: AtomicUsize,
    stuck_dropped_by_app: AtomicUsize,
}

impl Server {
    fn wrong(&self, what: String) {
        self.wrong.lock().unwrap().push(what);
    }
}

/// The handler: the first byte says what kind of client this is.
async fn handle(mut stream: tcp_hygiene::TcpStream, server: Arc<Server>) {
    let id = u64::from(stream.id());
    let mut seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut kind = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut kind)).await;
    match read {
        Ok(Ok(1)) if kind[0] == b'E' => {
            // Innocent: echo until the client leaves.
            server.innocents.lock().unwrap().push(stream.handle());
            let mut buf = vec![0u8; 8192];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = stream.write_all(&buf[..n]).await {
                            server.wrong(format!("innocent {id}: write failed: {e}"));
                            break;
                        }
                    }
                    Err(e) => {
                        server.wrong(format!("innocent {id}: read failed: {e}"));
                        break;
                    }
                }
            }
            if let Some(reason) = stream.close_reason() {
                server.wrong(format!("innocent {id}: closed by the library: {reason}"));
            }
        }
        Ok(Ok(1)) if kind[0] == b'C' => {
            // Churn: one echo, then the application drops the stream.
            let mut buf = [0u8; ECHO_LEN];
            let result = async {
                stream.read_exact(&mut buf).await?;
                stream.write_all(&buf).await
            }
            .await;
            if let Err(e) = result {
                server.wrong(format!("churn {id}: {e}"));
            }
            // Stay a little while, then make sure nobody shut our socket down meanwhile
            // (the client is still there, waiting for our FIN).
            tokio::time::sleep(between(
                &mut seed,
                Duration::ZERO,
                Duration::from_millis(40),
            ))
            .await;
            let state = stream.handle().snapshot().tcp_info.map(|i| i.state);
            if state != Some(KernelState::Established) {
                server.wrong(format!(
                    "churn {id}: kernel state {state:?} before we closed"
                ));
            }
            if let Some(reason) = stream.close_reason() {
                server.wrong(format!("churn {id}: closed by the library: {reason}"));
            }
        }
        Ok(Ok(1)) if kind[0] == b'S' => {
            // Stuck: the client has half-closed. Hold the stream without polling it for
            // a random time around close_wait_timeout, then drop it: sometimes before the
            // supervisor reaps it, sometimes after, sometimes at the same moment.
            tokio::time::sleep(between(
                &mut seed,
                TIMEOUT - Duration::from_millis(100),
                TIMEOUT + Duration::from_millis(100),
            ))
            .await;
            if stream.close_reason().is_none() {
                server.stuck_dropped_by_app.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Ok(0)) => {
            // Silent: closed by first_byte_timeout, or the client gave up first.
            tokio::time::sleep(between(
                &mut seed,
                Duration::ZERO,
                Duration::from_millis(30),
            ))
            .await;
        }
        Ok(Ok(_)) => server.wrong(format!("conn {id}: unknown kind {kind:?}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => server.wrong(format!("conn {id}: first read failed: {e}")),
        Err(_) => server.wrong(format!("conn {id}: nothing happened for 5 s")),
    }
    drop(stream);
    server.handlers.fetch_sub(1, Ordering::Relaxed);
}

async fn accept_loop(listener: Arc<TcpListener>, server: Arc<Server>) {
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        server.handlers.fetch_add(1, Ordering::Relaxed);
        server.all.lock().unwrap().push(stream.handle());
        tokio::spawn(handle(stream, server.clone()));
    }
}

/// What this process's descriptors point to (`socket:[…]`, `anon_inode:[eventpoll]`, …).
fn fd_targets() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push(target.to_string_lossy().into_owned());
        }
    }
    out
}

async fn echo_round_trip(client: &mut TcpStream, seed: u64, len: usize) -> Result<(), String> {
    let data = payload(seed, len);
    client.write_all(&data).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if back != data {
        let at = (0..len).find(|&i| back[i] != data[i]).unwrap();
        return Err(format!("echo differs at byte {at}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wrong_socket_is_closed_under_descriptor_reuse() {
    require!(Need::Tool("ss"));
    let started = Instant::now();
    let baseline = open_fds();
    let baseline_targets = fd_targets();
    let server = Arc::new(Server::default());
    let client_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let listener = Arc::new(
            support::listener(
                Builder::new()
                    .close_wait_timeout(TIMEOUT)
                    .first_byte_timeout(TIMEOUT),
            )
            .await,
        );
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(accept_loop(listener.clone(), server.clone()));

        // The innocents: well-behaved echo clients that stay for the whole run.
        let mut innocents = Vec::new();
        for i in 0..INNOCENTS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"E").await.unwrap();
            echo_round_trip(&mut c, i as u64, 16).await.unwrap();
            innocents.push(c);
        }

        let mut background = JoinSet::new();
        let mut seed = 0x5EED_u64;
        let mut churned = 0;
        for batch in 0..BATCHES {
            // Stuck clients: request, half-close, then wait for the server's FIN.
            for _ in 0..STUCK_PER_BATCH {
                let errors = client_errors.clone();
                background.spawn(async move {
                    let mut c = TcpStream::connect(addr).await.unwrap();
                    c.write_all(b"S").await.unwrap();
                    c.shutdown().await.unwrap();
                    expect_server_close(&mut c, "stuck client", &errors).await;
                });
            }
            // Silent clients: half wait for first_byte_timeout, half give up around it.
            for i in 0..SILENT_PER_BATCH {
                let errors = client_errors.clone();
                let give_up = between(
                    &mut seed,
                    TIMEOUT - Duration::from_millis(50),
                    TIMEOUT + Duration::from_millis(50),
                );
                background.spawn(async move {
                    let mut c = TcpStream::connect(addr).await.unwrap();
                    if i % 2 == 0 {
                        tokio::time::sleep(give_up).await;
                        return;
                    }
                    expect_server_close(&mut c, "silent client", &errors).await;
                });
            }
            // Churn: connect, one echo, the server drops the stream.
            let mut churn = JoinSet::new();
            for i in 0..CHURN_PER_BATCH {
                let data_seed = (batch * CHURN_PER_BATCH + i) as u64 + 1_000;
                churn.spawn(async move {
                    let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                    let mut msg = vec![b'C'];
                    msg.extend(payload(data_seed, ECHO_LEN));
                    c.write_all(&msg).await.map_err(|e| e.to_string())?;
                    let mut back = Vec::new();
                    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut back))
                        .await
                        .map_err(|_| "churn echo timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                    if back != msg[1..] {
                        return Err(format!("churn echo wrong: {} bytes", back.len()));
                    }
                    Ok::<_, String>(())
                });
            }
            while let Some(result) = churn.join_next().await {
                if let Err(e) = result.unwrap() {
                    client_errors.lock().unwrap().push(e);
                }
                churned += 1;
            }
            // New innocents, which get the descriptor numbers just freed by the churn.
            for i in 0..NEW_INNOCENTS_PER_BATCH {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(b"E").await.unwrap();
                if let Err(e) = echo_round_trip(&mut c, (batch * 100 + i) as u64, 16).await {
                    client_errors
                        .lock()
                        .unwrap()
                        .push(format!("new innocent in batch {batch}: {e}"));
                }
                innocents.push(c);
            }
            // The innocents answer during the churn too.
            for (i, c) in innocents.iter_mut().enumerate() {
                if let Err(e) = echo_round_trip(c, (batch * 1000 + i) as u64, 32).await {
                    client_errors
                        .lock()
                        .unwrap()
                        .push(format!("innocent {i} in batch {batch}: {e}"));
                }
            }
        }
        while let Some(result) = background.join_next().await {
            result.unwrap();
        }
        eprintln!(
            "{churned} churned, {} stuck, {} silent, {ALL_INNOCENTS} innocent connections in {:?}",
            BATCHES * STUCK_PER_BATCH,
            BATCHES * SILENT_PER_BATCH,
            started.elapsed()
        );

        // After the churn: every innocent still echoes byte for byte, larger messages.
        for (i, c) in innocents.iter_mut().enumerate() {
            if let Err(e) = echo_round_trip(c, 7_000_000 + i as u64, 64 * 1024).await {
                client_errors
                    .lock()
                    .unwrap()
                    .push(format!("innocent {i} after the churn: {e}"));
            }
        }
        let stats = listener.stats();
        eprintln!("stats: {stats:?}");
        let wrong = server.wrong.lock().unwrap().clone();
        assert!(
            wrong.is_empty(),
            "server side: {} failures: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        let errors = client_errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "client side: {} failures: {:?}",
            errors.len(),
            &errors[..errors.len().min(20)]
        );

        let handles = server.innocents.lock().unwrap().clone();
        assert_eq!(handles.len(), ALL_INNOCENTS);
        for h in &handles {
            assert_eq!(h.close_reason(), None, "innocent {h:?}");
            assert_eq!(h.state(), ConnectionState::Open, "innocent {h:?}");
            let info = h.snapshot().tcp_info.expect("still open: TCP_INFO");
            assert_eq!(info.state, KernelState::Established);
        }
        assert_eq!(
            support::ss_count(addr.port(), "established"),
            ALL_INNOCENTS,
            "only the innocents are left"
        );

        let reaped = stats.closed(CloseReason::CloseWaitTimeout);
        let by_app = server.stuck_dropped_by_app.load(Ordering::Relaxed);
        eprintln!(
            "stuck: {reaped} reaped by the supervisor, {by_app} dropped by the application first; silent: {} closed by first_byte_timeout",
            stats.closed(CloseReason::FirstByteTimeout)
        );
        // The race was really run: both sides won sometimes.
        assert!(reaped > 0, "the supervisor reaped no stuck connection");
        assert!(
            by_app > 0,
            "the application never dropped a stuck connection first"
        );
        assert!(stats.closed(CloseReason::FirstByteTimeout) > 0);
        let expected_accepts =
            ALL_INNOCENTS + BATCHES * (CHURN_PER_BATCH + STUCK_PER_BATCH + SILENT_PER_BATCH);
        assert_eq!(stats.accepted, expected_accepts as u64);

        // Everyone leaves: innocents close, handlers drop their streams, the listener goes.
        drop(innocents);
        wait_for(Duration::from_secs(5), "all handlers done", || {
            server.handlers.load(Ordering::Relaxed) == 0
        })
        .await;
        acceptor.abort();
        let _ = acceptor.await;
        assert_eq!(Arc::strong_count(&listener), 1);
        // Handles keep the per-connection state (and through it the supervisor) alive,
        // not descriptors; let them go too.
        server.all.lock().unwrap().clear();
        server.innocents.lock().unwrap().clear();
    }
    // The listener, every stream and the supervisor (with its epoll) are gone: the
    // descriptor count returns to where it started.
    let waited = wait_for(
        Duration::from_secs(5),
        "descriptors back to the baseline",
        || open_fds() <= baseline + 2,
    )
    .await;
    eprintln!(
        "fds: baseline {baseline}, now {} (after {waited:?}); total {:?}",
        open_fds(),
        started.elapsed()
    );
    // Whatever is left beyond the baseline (e.g. the runtime's blocking pool) is not ours:
    // no socket and no epoll of the supervisor (its task ends once the listener and the
    // last stream and handle are gone; give it a moment to run).
    let extra = || {
        let mut extra = fd_targets();
        for t in &baseline_targets {
            if let Some(i) = extra.iter().position(|e| e == t) {
                extra.swap_remove(i);
            }
        }
        extra.retain(|t| t.starts_with("socket:") || t.contains("eventpoll"));
        extra
    };
    let waited = wait_for(
        Duration::from_secs(5),
        "no leftover socket or epoll",
        || extra().is_empty(),
    )
    .await;
    eprintln!("no socket or epoll beyond the baseline (after {waited:?})");
    let server_wrong = server.wrong.lock().unwrap().len();
    assert_eq!(server_wrong, 0);
}

/// The server must close this client's connection (EOF, nothing more to read) within 5 s;
/// anything else is recorded in `errors`.
async fn expect_server_close(
    c: &mut TcpStream,
    what: &str,
    errors: &std::sync::Mutex<Vec<String>>,
) {
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await {
        Ok(Ok(0)) => {}
        other => errors.lock().unwrap().push(format!("{what}: {other:?}")),
    }
}
