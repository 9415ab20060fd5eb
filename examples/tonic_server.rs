//! A tonic gRPC server over a supervised listener, served by the library (HTTP/2, each
//! connection's task the library's to end), serving the standard gRPC health service
//! (`grpc.health.v1.Health`, from the `tonic-health` crate: no protoc needed). With
//! `--plain`, tonic's own server over tokio's listener (the control).
//!
//! ```text
//! cargo run --example tonic_server --features tonic -- --listen 127.0.0.1:50051 [FLAGS]
//! grpc_health_probe -addr 127.0.0.1:50051 -service tcp_hygiene.Example   # if you have it
//! ```
//!
//! The flags are the axum example's (`--help` lists them; `--header-read-timeout-ms`
//! concerns HTTP/1 and does nothing here); so are the drain on SIGTERM or SIGINT and its
//! JSON report. The server reports `SERVING` for the whole server (`""`) and for
//! `tcp_hygiene.Example`.

mod common;

use std::process::ExitCode;

use tonic_health::ServingStatus;

/// The service name this example reports as serving, besides the whole server.
const SERVICE: &str = "tcp_hygiene.Example";

#[tokio::main]
async fn main() -> ExitCode {
    let (args, usage) = match common::serve_args("tonic_server") {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    if args.plain {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("tonic_server: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        common::announce(listener.local_addr().expect("bound"));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let served = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(health, incoming, common::shutdown_signal())
            .await;
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tonic_server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let listener = match common::bind(&args, &usage).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(listener.local_addr().expect("bound"));
    let serve = tcp_hygiene::integration::tonic::serve(listener, health);
    let served = common::configure(serve, &args)
        .with_graceful_shutdown(common::shutdown_signal(), args.drain_soft, args.drain_hard)
        .await;
    common::finish("tonic_server", served)
}
