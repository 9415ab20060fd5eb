//! Prometheus metrics for a supervised axum server: the `metrics` feature feeds the
//! `metrics` facade, and this example installs `metrics-exporter-prometheus` as its
//! recorder and serves the scrape on the same listener, at `/metrics`.
//!
//! ```text
//! cargo run --example metrics --features axum,metrics,serde -- --listen 127.0.0.1:3000 \
//!     [--close-wait-timeout-ms N] [--idle-timeout-ms N] [... every flag of axum_server]
//! curl -s 127.0.0.1:3000/metrics | grep tcp_hygiene
//! ```
//!
//! The first line on stdout is `listening on IP:PORT`. Routes: `GET /` (`ok`),
//! `GET|POST /hang` (never answers: its socket sits in `CLOSE_WAIT` once the client
//! leaves, until the library closes it), `GET /stats` (the listener's `Stats` as JSON),
//! `GET /metrics` (the Prometheus text format).
//!
//! The recorder must be installed before the listener is built: the listener registers
//! its metrics with the recorder installed at that moment.

mod common;

use std::process::ExitCode;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusBuilder;

async fn hang() -> &'static str {
    std::future::pending().await
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, usage) = match common::serve_args("metrics") {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let prometheus = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("metrics: cannot install the Prometheus recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match common::bind(&args, &usage).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(listener.local_addr().expect("bound"));
    let controller = listener.controller();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/hang", get(hang).post(hang))
        .route(
            "/stats",
            get(move || async move {
                serde_json::to_string(&controller.stats()).expect("stats as JSON")
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                // Histograms and summaries are computed at scrape time; the upkeep also
                // drains their buckets, so do it here rather than on a timer.
                prometheus.run_upkeep();
                prometheus.render()
            }),
        );
    let serve = tcp_hygiene::integration::axum::serve(listener, app);
    let served = common::configure(serve, &args)
        .with_graceful_shutdown(common::shutdown_signal(), args.drain_soft, args.drain_hard)
        .await;
    common::finish("metrics", served)
}
