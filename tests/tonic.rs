//! The `tonic` integration, end to end: the `tonic_server` example serves the gRPC health
//! service through the supervised listener and a tonic client calls it over 127.0.0.1;
//! in-process, `Request::remote_addr` works through the `Connected` impl and the
//! listener's stats stay reachable through an `Arc`.
#![cfg(feature = "tonic")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::example::Server;
use tcp_hygiene::integration::tonic::Incoming;
use tcp_hygiene::{Builder, TcpListener};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const LIMIT: Duration = Duration::from_secs(10);

async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(LIMIT)
        .timeout(LIMIT)
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = tokio::time::timeout(LIMIT, client.check(request))
        .await
        .expect("answer in time")?;
    Ok(response.into_inner().status)
}

#[tokio::test]
async fn example_answers_grpc_health_checks() {
    let server = Server::start("tonic_server", &[]);
    let mut client = client(server.addr).await;
    assert_eq!(
        check(&mut client, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        check(&mut client, "tcp_hygiene.Example").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let unknown = check(&mut client, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

/// tonic sees the supervised stream's addresses through `Connected` (tonic's own
/// `TcpConnectInfo`, so `Request::remote_addr` works), and the listener shared through an
/// `Arc` still reports its stats.
#[tokio::test]
async fn remote_addr_and_stats_through_incoming() {
    let listener = Arc::new(Builder::new().bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let incoming = Incoming::from(listener.clone());
    assert_eq!(incoming.get_ref().local_addr().unwrap(), addr);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let seen = move |request: tonic::Request<()>| {
        let _ = tx.send((request.remote_addr(), request.local_addr()));
        Ok(request)
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(seen))
            .serve_with_incoming(health, incoming),
    );

    let mut client = client(addr).await;
    assert_eq!(
        check(&mut client, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    let (remote, local) = rx.recv().await.expect("the interceptor ran");
    let remote = remote.expect("Request::remote_addr");
    assert_eq!(remote.ip(), addr.ip());
    assert_ne!(remote.port(), addr.port());
    assert_eq!(local, Some(addr));
    let stats = listener.stats();
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(stats.open, 1, "{stats:?}");
    server.abort();
}

/// `into_incoming` is the one-liner for a listener nobody else needs.
#[tokio::test]
async fn into_incoming_serves() {
    let listener: TcpListener = Builder::new().bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder().serve_with_incoming(health, listener.into_incoming()),
    );
    let mut client = client(addr).await;
    assert_eq!(
        check(&mut client, "").await.unwrap(),
        ServingStatus::Serving as i32
    );
    server.abort();
}
