//! axum over a supervised listener, served by the library (each connection's task is
//! the library's to end), or with `--plain` by `axum::serve` over tokio's listener (the
//! control).
//!
//! ```text
//! cargo run --example axum_server --features axum -- --listen 127.0.0.1:3000 \
//!     [--close-wait-timeout-ms N] [--fin-wait-timeout-ms N] [--idle-timeout-ms N] \
//!     [--read-idle-timeout-ms N] [--write-idle-timeout-ms N] [--first-byte-timeout-ms N] \
//!     [--max-connection-age-ms N] [--keepalive IDLE_MS,INTERVAL_MS,COUNT] \
//!     [--user-timeout-ms N] [--max-connections N] [--min-receive-rate BYTES_PER_S] \
//!     [--min-send-rate BYTES_PER_S] [--min-rate-grace-ms N] [--header-read-timeout-ms N] \
//!     [--keep-alive-timeout-ms N] [--drain-soft-ms N] [--drain-hard-ms N] [--plain]
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the default (the drain: 5000 and 30000
//! ms). With `--plain` every other flag is accepted and ignored. The first line on stdout
//! is `listening on IP:PORT`. On SIGTERM or SIGINT the server drains with the given
//! deadlines, prints the report as one line of JSON,
//! `{"drain":{"connections":N,"finished":N,"idle_closed":N,"forced":N}}`, and exits 0.
//!
//! Routes:
//! - `GET /`: `ok`.
//! - `GET /conn`: `id=N peer=IP:PORT` of the connection that carried the request, from
//!   `ConnectInfo<ConnectionHandle>`.
//! - `GET|POST /hang`: never answers, and never reads a request body: the stuck handler
//!   whose socket would sit in `CLOSE_WAIT` forever once the client leaves, if the
//!   listener were tokio's.
//! - `GET /slow?ms=N`: `done`, after N ms.
//! - `GET /big?bytes=N`: N bytes (a download for slow readers).
//!
//! Try it from bash: send a request whose body never ends, then hang up, and watch
//! `ss -tan state close-wait` empty itself after `--close-wait-timeout-ms`:
//!
//! ```text
//! exec 3<>/dev/tcp/127.0.0.1/3000
//! printf 'POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc' >&3
//! exec 3>&-
//! ```

mod common;

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery};
use axum::routing::get;
use axum::Router;
use tcp_hygiene::ConnectionHandle;

async fn conn(ConnectInfo(conn): ConnectInfo<ConnectionHandle>) -> String {
    format!("id={} peer={}", conn.id(), conn.peer_addr())
}

async fn hang() -> &'static str {
    std::future::pending().await
}

async fn slow(RawQuery(query): RawQuery) -> &'static str {
    let ms = common::query_number(query.as_deref(), "ms").unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

async fn big(RawQuery(query): RawQuery) -> Vec<u8> {
    let bytes = common::query_number(query.as_deref(), "bytes").unwrap_or(1 << 20);
    vec![b'x'; usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30)]
}

/// Every route but `/conn`, which each mode answers its own way.
fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/hang", get(hang).post(hang))
        .route("/slow", get(slow))
        .route("/big", get(big))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, usage) = match common::serve_args("axum_server") {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if args.plain {
        return plain(&args).await;
    }
    let listener = match common::bind(&args, &usage).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(listener.local_addr().expect("bound"));
    let app = routes().route("/conn", get(conn));
    let serve = tcp_hygiene::integration::axum::serve(listener, app);
    let served = common::configure(serve, &args)
        .with_graceful_shutdown(common::shutdown_signal(), args.drain_soft, args.drain_hard)
        .await;
    common::finish("axum_server", served)
}

/// The control: axum's own server over tokio's listener, no library at all.
async fn plain(args: &common::Args) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("axum_server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    common::announce(listener.local_addr().expect("bound"));
    // `/conn` answers with the plain peer address here.
    let app = routes().route(
        "/conn",
        get(
            |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                format!("id=0 peer={peer}")
            },
        ),
    );
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(common::shutdown_signal())
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum_server: {e}");
            ExitCode::FAILURE
        }
    }
}
