//! What the `http` and `https` sections share: a keep-alive HTTP client connection
//! (HTTP/1.1 or HTTP/2), and contenders measured in interleaved rounds, reported as
//! ratios to the first.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::stats::{median, spread};

/// A keep-alive client connection: HTTP/1.1, or HTTP/2.
pub(crate) enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// The handshake over `io` (HTTP/2 if `h2`), its connection driven by a task.
    pub(crate) async fn handshake<I>(io: I, h2: bool) -> (Self, tokio::task::JoinHandle<()>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H2(sender), driver)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H1(sender), driver)
        }
    }

    /// One `GET uri`; checks that the body is `ok`.
    pub(crate) async fn get(&mut self, uri: &'static str) {
        let request = hyper::Request::get(uri)
            .body(Empty::new())
            .expect("request");
        let response = match self {
            Sender::H1(sender) => {
                sender.ready().await.expect("ready");
                sender.send_request(request).await
            }
            Sender::H2(sender) => sender.send_request(request).await,
        };
        let response = response.expect("response");
        assert!(response.status().is_success());
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes().as_ref(), b"ok");
    }
}

/// Runs `rounds` rounds of `one` for each of `contenders` (their order rotated each
/// round); each round's values, in the contenders' order.
pub(crate) fn interleaved<C: Copy>(
    rounds: usize,
    contenders: &[C],
    mut one: impl FnMut(C) -> f64,
) -> Vec<Vec<f64>> {
    (0..rounds)
        .map(|round| {
            let mut values = vec![0.0; contenders.len()];
            let mut order: Vec<usize> = (0..contenders.len()).collect();
            order.rotate_left(round % contenders.len());
            for i in order {
                values[i] = one(contenders[i]);
            }
            values
        })
        .collect()
}

/// One table row per contender (`protocol`, name, median value, median ratio to the
/// first contender, the ratios' spread), and the median ratio of each but the first.
pub(crate) fn rows(
    protocol: &str,
    names: &[&'static str],
    values: &[Vec<f64>],
) -> (Vec<String>, Vec<(&'static str, f64)>) {
    let mut lines = Vec::new();
    let mut ratios = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mine: Vec<f64> = values.iter().map(|r| r[i]).collect();
        let ratio: Vec<f64> = values.iter().map(|r| r[i] / r[0]).collect();
        let (lo, hi) = spread(&ratio);
        lines.push(format!(
            "{protocol:<8} {name:<17} {:>10.0} {:>7.3} {:>15}",
            median(&mine),
            median(&ratio),
            format!("{lo:.3}..{hi:.3}")
        ));
        if i > 0 {
            ratios.push((*name, median(&ratio)));
        }
    }
    (lines, ratios)
}

/// The table's header.
pub(crate) fn header() -> String {
    format!(
        "{:<8} {:<17} {:>10} {:>7} {:>15}",
        "protocol", "contender", "req/s", "ratio", "ratio spread"
    )
}

/// The `ratio <metric> <contender> <median>` lines, then the `target …` lines.
pub(crate) fn verdicts(ratios: &[(String, &'static str, f64)], target: f64) -> Vec<String> {
    let mut out: Vec<String> = ratios
        .iter()
        .map(|(metric, name, ratio)| format!("ratio {metric} {name} {ratio:.3}"))
        .collect();
    for (metric, name, ratio) in ratios {
        let verdict = if *ratio >= target { "met" } else { "MISSED" };
        out.push(format!(
            "target {metric} {name} ≥ {target:.2}: {verdict} ({ratio:.3})"
        ));
    }
    out
}
