//! The kernel's view through `ss`, shaped like a census, to compare the two.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tcp_hygiene_cli::PortCensus;

/// What `ss -tane` shows for one local port.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SsView {
    /// Sockets by state, with the kernel's names (`ESTABLISHED`, `SYN_RECV`, …).
    pub(crate) states: BTreeMap<String, u64>,
    /// Sockets in `FIN_WAIT_1`, `FIN_WAIT_2`, `LAST_ACK` or `CLOSING` with `ino:0`: closed
    /// by their process.
    pub(crate) orphans: u64,
}

/// Runs `ss` (a `Command` for `ss` here or in a namespace) for local port `port`.
pub(crate) fn ss_view(mut ss: Command, port: u16) -> SsView {
    ss.args(["-Htane", "state", "all", &format!("( sport = :{port} )")]);
    let mut view = SsView::default();
    for line in super::ss_output(ss) {
        let mut words = line.split_whitespace();
        let state = match words.next().expect("ss line starts with a state") {
            "ESTAB" => "ESTABLISHED".to_owned(),
            other => other.replace('-', "_"),
        };
        let orphan_state = matches!(
            state.as_str(),
            "FIN_WAIT_1" | "FIN_WAIT_2" | "LAST_ACK" | "CLOSING"
        );
        if orphan_state && words.any(|w| w == "ino:0") {
            view.orphans += 1;
        }
        *view.states.entry(state).or_default() += 1;
    }
    view
}

/// `ss` for local port `port` in this process's namespace.
pub(crate) fn ss_here(port: u16) -> SsView {
    ss_view(Command::new("ss"), port)
}

/// A port's census in the same shape.
pub(crate) fn census_view(port: Option<&PortCensus>) -> SsView {
    let Some(port) = port else {
        return SsView::default();
    };
    SsView {
        states: port.states().map(|(s, n)| (s.to_string(), n)).collect(),
        orphans: port.orphans(),
    }
}

/// A port object of `census --json` in the same shape.
pub(crate) fn json_view(port: &serde_json::Value) -> SsView {
    let states = port["states"]
        .as_object()
        .unwrap_or_else(|| panic!("no states in {port}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect();
    SsView {
        states,
        orphans: port["orphans"].as_u64().expect("orphans"),
    }
}

/// The counts one state has in `view` (0 if absent).
pub(crate) fn n(view: &SsView, state: &str) -> u64 {
    view.states.get(state).copied().unwrap_or(0)
}

/// Polls `probe` every 20 ms until it says yes; panics with `what` and the last thing it
/// saw after `limit`. (The sync sibling of the library tests' async `wait_for`: these
/// tests use `std` sockets.)
pub(crate) fn wait_until<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> (bool, T),
) {
    let start = Instant::now();
    loop {
        let (ok, seen) = probe();
        if ok {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen: {seen:#?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to 10 s until `ss` for local port `port` satisfies `cond`.
pub(crate) fn wait_for_ss(port: u16, what: &str, cond: impl Fn(&SsView) -> bool) {
    wait_until(Duration::from_secs(10), what, || {
        let view = ss_here(port);
        (cond(&view), view)
    });
}

/// A listener on `bind` (`"127.0.0.1:0"`, `"[::1]:0"`), a client connected to it, and
/// the server side it accepted.
pub(crate) fn loopback_connection(bind: &str) -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(bind).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (listener, client, server)
}
