//! Shared helpers for the integration tests: real sockets, the kernel's own view.
#![allow(dead_code)]

pub(crate) mod attack;
#[cfg(feature = "tls")]
pub(crate) mod certs;
pub(crate) mod example;
pub(crate) mod http;

use std::process::Command;
use std::time::{Duration, Instant};

use tcp_hygiene::{Builder, TcpListener};
// Each test file includes this module and uses only part of it.
#[allow(unused_imports)]
pub(crate) use tcp_hygiene_test_support::{
    netns, require,
    ss::ss_output,
    system::{self, Need},
};

/// Installs a tracing subscriber once (`RUST_LOG=tcp_hygiene=debug` to see events).
pub(crate) fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Binds a supervised listener on 127.0.0.1 with an ephemeral port.
pub(crate) async fn listener(builder: &Builder) -> TcpListener {
    trace_init();
    builder.bind("127.0.0.1:0").await.expect("bind")
}

/// A loopback client connected to `listener`, and the server side it accepted.
pub(crate) async fn connect_pair(
    listener: &TcpListener,
) -> (tokio::net::TcpStream, tcp_hygiene::TcpStream) {
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// The number of sockets with local port `port` in `state` (an `ss` state filter such as
/// `close-wait`, `fin-wait-2`, `established`), as the kernel reports them through `ss`.
pub(crate) fn ss_count(port: u16, state: &str) -> usize {
    ss_filter_count(state, &format!("( sport = :{port} )"))
}

/// Like [`ss_count`] for one connection: local port `local`, remote port `remote`.
/// (A client's ephemeral port alone would also match strangers' sockets.)
pub(crate) fn ss_conn(local: u16, remote: u16, state: &str) -> usize {
    ss_filter_count(
        state,
        &format!("( sport = :{local} and dport = :{remote} )"),
    )
}

/// The remote ports of the connections in `state` to local port `port`, as `ss` shows them.
pub(crate) fn ss_peer_ports(port: u16, state: &str) -> Vec<u16> {
    let mut ss = Command::new("ss");
    ss.args(["-Htan", "state", state, &format!("( sport = :{port} )")]);
    ss_output(ss)
        .iter()
        .filter_map(|line| {
            line.split_whitespace()
                .last()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// The connections an attack has made to each of `ports` so far: the distinct peers `ss`
/// has shown established, kept across calls. A slow attacker's first connections may
/// already be closed before its last one connects (a server that clears slow peers does
/// that), so a count of the established at one instant may never reach the total.
#[derive(Default)]
pub(crate) struct PeersSeen(std::collections::HashMap<u16, std::collections::HashSet<u16>>);

impl PeersSeen {
    /// Looks again; returns how many distinct peers `port` has had established.
    pub(crate) fn look(&mut self, port: u16) -> usize {
        let seen = self.0.entry(port).or_default();
        seen.extend(ss_peer_ports(port, "established"));
        seen.len()
    }

    /// Waits until each `(port, connections)` has had that many distinct peers; panics
    /// after `limit` with the counts reached.
    pub(crate) async fn wait(&mut self, wants: &[(u16, usize)], limit: Duration) {
        let start = Instant::now();
        loop {
            let seen: Vec<usize> = wants.iter().map(|&(port, _)| self.look(port)).collect();
            if seen.iter().zip(wants).all(|(&n, &(_, want))| n >= want) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?} the attacks had made {seen:?} of {:?} connections",
                wants.iter().map(|&(_, want)| want).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ss_filter_count(state: &str, filter: &str) -> usize {
    let mut ss = Command::new("ss");
    ss.args(["-Htan", "state", state, filter]);
    ss_output(ss).len()
}

/// All server-side sockets on `port` that are not listening, as `ss` lines.
pub(crate) fn ss_lines(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-Htanio", "state", "all", &format!("( sport = :{port} )")])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 5 ms until it holds; returns the time it took, or panics with
/// `what` after `limit`.
pub(crate) async fn wait_for(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Open descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

/// Closes `client` abortively: `SO_LINGER` 0, then close, sends RST.
pub(crate) fn reset(client: tokio::net::TcpStream) {
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(client);
}

/// The close reason an I/O error of a closed stream carries (panics if it carries none).
pub(crate) fn reason_of(err: &std::io::Error) -> tcp_hygiene::CloseReason {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<tcp_hygiene::error::Closed>())
        .unwrap_or_else(|| panic!("the error does not carry the close reason: {err:?}"))
        .reason()
}
