//! FIN detection and reaping: the client half-closes connections whose handlers do not
//! poll, one at a time and then many at once; the server stamps when the library saw
//! each FIN, the client when the library's close reached it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::common::stats::{percentile, sorted};
use crate::lines::{metric, tell, Lines};
use crate::probes::mono_ns;
use crate::CLOSE_WAIT_TIMEOUT;

/// Half-closes `sequential` connections one at a time, then `burst` at once, and reports
/// detection latency and reap lateness.
pub(crate) async fn measure(
    streams: &[tcp_hygiene::TcpStream],
    ports: &[SocketAddr],
    sequential: usize,
    burst: usize,
    to_client: &mut tokio::process::ChildStdin,
    from_client: &mut Lines,
) {
    let mut reap_late = Vec::new();
    let mut early = 0;
    for (phase, range, gap_us) in [
        ("seq", 0..sequential, 3000),
        ("burst", sequential..sequential + burst, 0),
    ] {
        let r = fin_phase(
            &streams[range.clone()],
            &ports[range],
            gap_us,
            to_client,
            from_client,
        )
        .await;
        let latencies = sorted(r.detect.clone());
        let detected = latencies.len();
        match phase {
            "seq" => {
                metric("fin_detect_p50_us", percentile(&latencies, 0.5) / 1e3);
                metric("fin_detect_p99_us", percentile(&latencies, 0.99) / 1e3);
                metric("fin_detect_max_us", percentile(&latencies, 1.0) / 1e3);
            }
            _ => {
                metric("fin_burst_p50_ms", percentile(&latencies, 0.5) / 1e6);
                metric("fin_burst_p99_ms", percentile(&latencies, 0.99) / 1e6);
                metric("fin_burst_max_ms", percentile(&latencies, 1.0) / 1e6);
                metric("fin_burst_detected", detected as f64);
                metric("fin_burst_sent", r.sent as f64);
            }
        }
        println!(
            "{phase}: {} FINs sent, {detected} detected, {} EOFs (reaped) seen by the client",
            r.sent, r.reaped
        );
        let late = sorted(r.reap_late.clone());
        metric(
            &format!("reap_late_{phase}_p50_ms"),
            percentile(&late, 0.5) / 1e6,
        );
        metric(
            &format!("reap_late_{phase}_p99_ms"),
            percentile(&late, 0.99) / 1e6,
        );
        metric(
            &format!("reap_late_{phase}_min_ms"),
            percentile(&late, 0.0) / 1e6,
        );
        reap_late.extend(r.reap_late);
        early += r.early;
    }
    let late = sorted(reap_late);
    metric("reap_late_p50_ms", percentile(&late, 0.5) / 1e6);
    metric("reap_late_p99_ms", percentile(&late, 0.99) / 1e6);
    metric("reap_late_max_ms", percentile(&late, 1.0) / 1e6);
    metric("reap_late_min_ms", percentile(&late, 0.0) / 1e6);
    metric("reap_measured", late.len() as f64);
    metric("reap_early", early as f64);
}

struct FinResults {
    sent: usize,
    /// ns from the client's shutdown to `peer_closed()`.
    detect: Vec<f64>,
    reaped: usize,
    /// ns from detection + close_wait_timeout to the client's EOF.
    reap_late: Vec<f64>,
    early: usize,
}

/// Half-closes `streams` from the client side (`gap_us` apart, 0 = all at once) while
/// their handlers do not poll; times detection and reaping.
async fn fin_phase(
    streams: &[tcp_hygiene::TcpStream],
    ports: &[SocketAddr],
    gap_us: u64,
    to_client: &mut tokio::process::ChildStdin,
    from_client: &mut Lines,
) -> FinResults {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (stream, &port) in streams.iter().zip(ports) {
        let closed = stream.peer_closed();
        let tx = tx.clone();
        tokio::spawn(async move {
            closed.await;
            let _ = tx.send((port, mono_ns()));
        });
    }
    drop(tx);
    // Every waiter must be parked before the first FIN, or its stamp would be late.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let list: Vec<String> = ports.iter().map(SocketAddr::to_string).collect();
    tell(to_client, &format!("close {gap_us} {}", list.join(" "))).await;

    let mut shut: HashMap<SocketAddr, u64> = HashMap::new();
    let mut eof: HashMap<SocketAddr, u64> = HashMap::new();
    loop {
        let line = from_client
            .next_line()
            .await
            .expect("client")
            .expect("client exited");
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["fin", port, t] => {
                shut.insert(port.parse().expect("address"), t.parse().expect("t"));
            }
            ["eof", port, t] => {
                eof.insert(port.parse().expect("address"), t.parse().expect("t"));
            }
            ["done"] => break,
            _ => println!("client: {line}"),
        }
    }
    let mut detected: HashMap<SocketAddr, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while detected.len() < streams.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((port, t))) => {
                detected.insert(port, t);
            }
            _ => break,
        }
    }
    let timeout_ns = CLOSE_WAIT_TIMEOUT.as_nanos() as u64;
    let mut r = FinResults {
        sent: shut.len(),
        detect: Vec::new(),
        reaped: eof.len(),
        reap_late: Vec::new(),
        early: 0,
    };
    for (port, &t_shut) in &shut {
        let Some(&t_detect) = detected.get(port) else {
            continue;
        };
        r.detect.push(t_detect.saturating_sub(t_shut) as f64);
        if let Some(&t_eof) = eof.get(port) {
            r.reap_late
                .push(t_eof as f64 - (t_detect + timeout_ns) as f64);
            if t_eof < t_shut + timeout_ns {
                r.early += 1;
            }
        }
    }
    r
}
