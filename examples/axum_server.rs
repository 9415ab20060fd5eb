//! axum over a supervised listener.
//!
//! ```text
//! cargo run --example axum_server --features axum -- --listen 127.0.0.1:3000 \
//!     [--idle-timeout-ms N] [--close-wait-timeout-ms N]
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the library's default. The first line on
//! stdout is `listening on IP:PORT`.
//!
//! Routes:
//! - `GET /`: `ok`.
//! - `GET /conn`: `id=N peer=IP:PORT` of the connection that carried the request, from
//!   `ConnectInfo<ConnectionHandle>`.
//! - `GET|POST /hang`: never answers, and never reads a request body: the stuck handler
//!   whose socket would sit in `CLOSE_WAIT` forever once the client leaves, if the
//!   listener were tokio's.
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

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tcp_hygiene::ConnectionHandle;

async fn conn(ConnectInfo(conn): ConnectInfo<ConnectionHandle>) -> String {
    format!("id={} peer={}", conn.id(), conn.peer_addr())
}

async fn hang() -> &'static str {
    std::future::pending().await
}

#[tokio::main]
async fn main() -> ExitCode {
    let listener = match common::bind("axum_server").await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(&listener);

    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/conn", get(conn))
        .route("/hang", get(hang).post(hang));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnectionHandle>(),
    )
    .await;
    if let Err(e) = served {
        eprintln!("axum_server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
