//! hyper 1 + hyper-util over a supervised listener, served by the library: HTTP/1.1 and
//! HTTP/2 (prior knowledge) on the same port, detected per connection by hyper-util's
//! `auto` builder. With `--plain`, the same service in a hyper-util accept loop over
//! tokio's listener (the control).
//!
//! ```text
//! cargo run --example hyper_server --features hyper -- --listen 127.0.0.1:3000 [FLAGS]
//! curl http://127.0.0.1:3000/
//! curl --http2-prior-knowledge http://127.0.0.1:3000/
//! ```
//!
//! The flags are the axum example's (`--help` lists them); so are the drain on SIGTERM or
//! SIGINT and its JSON report. Routes: `/` (`ok`, with the response header
//! `x-connection` carrying the supervised connection's id), `/slow?ms=N` (`done` after N
//! ms), `/hang` (never answers), `/big?bytes=N`.

mod common;

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use hyper::body::Body;
use hyper::{Request, Response};
use tcp_hygiene::integration::hyper::RequestBody;
use tcp_hygiene::ConnectionHandle;

/// The response to any request; `id` is the connection's, where there is one.
async fn respond<B: Body>(request: Request<B>, id: u64) -> Result<Response<String>, Infallible> {
    let query = request.uri().query();
    let body = match request.uri().path() {
        "/slow" => {
            let ms = common::query_number(query, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "done".to_owned()
        }
        "/hang" => std::future::pending().await,
        "/big" => {
            let bytes = common::query_number(query, "bytes").unwrap_or(1 << 20);
            "x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30))
        }
        _ => "ok".to_owned(),
    };
    Ok(Response::builder()
        .header("x-connection", id)
        .body(body)
        .expect("a valid response"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, usage) = match common::serve_args("hyper_server") {
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
    let service = hyper::service::service_fn(|request: Request<RequestBody>| {
        let id = request
            .extensions()
            .get::<ConnectionHandle>()
            .map_or(0, |h| h.id().as_u64());
        respond(request, id)
    });
    let serve = tcp_hygiene::integration::hyper::serve(listener, service);
    let served = common::configure(serve, &args)
        .with_graceful_shutdown(common::shutdown_signal(), args.drain_soft, args.drain_hard)
        .await;
    common::finish("hyper_server", served)
}

/// The control: hyper-util's auto builder in a plain accept loop over tokio's listener.
async fn plain(args: &common::Args) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hyper_server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    common::announce(listener.local_addr().expect("bound"));
    let signal = common::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("hyper_server: accept: {e}");
                    continue;
                }
            },
            () = &mut signal => return ExitCode::SUCCESS,
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| respond(request, 0));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
