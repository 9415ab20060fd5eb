//! A tonic gRPC server over a supervised listener, serving the standard gRPC health
//! service (`grpc.health.v1.Health`, from the `tonic-health` crate: no protoc needed).
//!
//! ```text
//! cargo run --example tonic_server --features tonic -- --listen 127.0.0.1:50051 \
//!     [--idle-timeout-ms N] [--close-wait-timeout-ms N]
//! grpc_health_probe -addr 127.0.0.1:50051 -service tcp_hygiene.Example   # if you have it
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the library's default. The first line on
//! stdout is `listening on IP:PORT`. The server reports `SERVING` for the whole server
//! (`""`) and for `tcp_hygiene.Example`.

mod common;

use std::process::ExitCode;

use tonic_health::ServingStatus;

/// The service name this example reports as serving, besides the whole server.
const SERVICE: &str = "tcp_hygiene.Example";

#[tokio::main]
async fn main() -> ExitCode {
    let listener = match common::bind("tonic_server").await {
        Ok(listener) => listener,
        Err(code) => return code,
    };

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;

    common::announce(&listener);

    // With tonic's `router` feature (on by default) this is
    // `Server::builder().add_service(health).serve_with_incoming(listener.into_incoming())`.
    let served = tonic::transport::Server::builder()
        .serve_with_incoming(health, listener.into_incoming())
        .await;
    if let Err(e) = served {
        eprintln!("tonic_server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
