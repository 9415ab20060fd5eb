//! A gRPC client (tonic, the standard health service) whose channel connects through a
//! supervised `Connector`: when its server vanishes (a crash, a cable pulled, a NAT that
//! forgot the flow; no FIN, no RST), the next RPC fails within the user timeout instead of
//! waiting out ~15 minutes of retransmissions. With `--plain`, tonic's own connector (the
//! control).
//!
//! ```text
//! cargo run --example tonic_server --features tonic -- --listen 127.0.0.1:50051 &
//! cargo run --example grpc_client --features tonic -- http://127.0.0.1:50051 \
//!     [--user-timeout-ms 2000] [--every-ms 500] [--rpcs N] [--plain]
//! ```
//!
//! It calls `grpc.health.v1.Health/Check` every `--every-ms` (default 500) on one channel
//! and prints each outcome and how long it took; it stops at the first failed RPC, prints
//! the connector's close reasons, and exits with 1 (or with 0 after `--rpcs` good ones,
//! unlimited by default). To make the server vanish for real, run it in a network
//! namespace and drop its packets with a `blackhole` qdisc (the repository's
//! `RECIPES.md`); `tests/connector.rs` does exactly that with this example.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tcp_hygiene::{Builder, CloseReason};
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const USAGE: &str =
    "usage: grpc_client URL [--user-timeout-ms MS] [--every-ms MS] [--rpcs N] [--plain]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut user_timeout = Duration::from_secs(2);
    let mut every = Duration::from_millis(500);
    let mut rpcs = u64::MAX;
    let mut plain = false;
    let url = match common::client_args("grpc_client", USAGE, |flag, number| match flag {
        "--user-timeout-ms" => Some(number().map(|n| user_timeout = Duration::from_millis(n))),
        "--every-ms" => Some(number().map(|n| every = Duration::from_millis(n))),
        "--rpcs" => Some(number().map(|n| rpcs = n)),
        "--plain" => {
            plain = true;
            Some(Ok(()))
        }
        _ => None,
    }) {
        common::ClientArgs::Run(url) => url,
        common::ClientArgs::Exit(code) => return code,
    };
    let Some(url) = url else {
        eprintln!("grpc_client: which server?\n{USAGE}");
        return ExitCode::from(2);
    };
    let endpoint = match Endpoint::from_shared(url.clone()) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("grpc_client: {url}: {e}");
            return ExitCode::from(2);
        }
    };
    // `user_timeout` of zero is a `ConfigError` naming the option, printed here.
    let connector = match Builder::new()
        .user_timeout(user_timeout)
        .connect_timeout(Duration::from_secs(3))
        .connector()
    {
        Ok(connector) => connector,
        Err(e) => {
            eprintln!("grpc_client: {e}");
            return ExitCode::from(2);
        }
    };
    let channel = match plain {
        true => endpoint.connect().await,
        false => endpoint.connect_with_connector(connector.clone()).await,
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("grpc_client: cannot connect to {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("connected to {url}");
    let mut client = HealthClient::new(channel);
    let mut good = 0;
    while good < rpcs {
        let start = Instant::now();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        match client.check(request).await {
            Ok(response) => {
                let status = response.into_inner().status;
                println!(
                    "rpc ok after {} ms: status {status}",
                    start.elapsed().as_millis()
                );
                good += 1;
            }
            Err(status) => {
                println!(
                    "rpc failed after {} ms: {}",
                    start.elapsed().as_millis(),
                    status.message()
                );
                if !plain {
                    let stats = connector.stats();
                    let reasons: Vec<String> = CloseReason::all()
                        .filter(|r| stats.closed(*r) > 0)
                        .map(|r| format!("{r}={}", stats.closed(r)))
                        .collect();
                    println!("closed: {}", reasons.join(" "));
                }
                return ExitCode::FAILURE;
            }
        }
        tokio::time::sleep(every).await;
    }
    ExitCode::SUCCESS
}
