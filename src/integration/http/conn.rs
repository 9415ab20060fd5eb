//! One connection under a framework serve: hyper-util's auto builder drives HTTP, and
//! this decides when to ask it to wind down (the keep-alive timeout, the connection's
//! age, a drain) and when the connection is idle enough to close at a drain's soft
//! deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ::hyper::body::Body;
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::track::{Due, InFlight, RequestBody, Tracked};
use super::{BoxError, Ctx};
use crate::{CloseMode, CloseReason, ConnectionHandle, TcpStream};

/// Serves HTTP on `stream` until the connection ends.
pub(super) async fn serve<S, B>(stream: TcpStream, service: S, ctx: Arc<Ctx>)
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let handle = stream.handle();
    let in_flight = Arc::new(InFlight::new(handle.clone(), ctx.http2_only));
    // Listed only where shedding may need it.
    let _registered = ctx
        .shared
        .config
        .max_connections()
        .map(|_| Registered::new(&ctx, &in_flight));
    let service = Tracked::new(service, in_flight.clone(), handle.clone(), ctx.extend);
    let io = TokioIo::new(stream);
    if ctx.http2_only {
        let conn = ctx.builder.serve_connection(io, service);
        drive(conn, |c| c.graceful_shutdown(), &handle, &in_flight, &ctx).await;
    } else {
        let conn = ctx.builder.serve_connection_with_upgrades(io, service);
        drive(conn, |c| c.graceful_shutdown(), &handle, &in_flight, &ctx).await;
    }
}

/// Polls the connection to its end, asking it to wind down (HTTP/1: `Connection: close`
/// after the current response, at once if idle; HTTP/2: GOAWAY) when the keep-alive
/// timeout, the connection's age or a drain says so, and ending it when the header read
/// timeout runs out. The two request timeouts share one timer, re-armed only when it
/// fires (see [`InFlight::next_due`]).
async fn drive<C: Future>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    handle: &ConnectionHandle,
    in_flight: &InFlight,
    ctx: &Ctx,
) {
    tokio::pin!(conn);
    let header_read = ctx.header_read_timeout;
    let age_at = ctx.winding_down_at(handle);
    let mut winding_down = false;
    let mut soft_passed = false;
    let keep_alive = |winding_down: bool| ctx.keep_alive_timeout.filter(|_| !winding_down);
    let first = in_flight.next_due(Instant::now(), header_read, keep_alive(false));
    let mut timer_on = first.is_some();
    let timer = tokio::time::sleep_until(match first {
        Some(Due::Later(at)) => at.into(),
        _ => tokio::time::Instant::now(),
    });
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = ctx.shared.drain.cancelled(), if !winding_down => {
                winding_down = true;
                graceful(conn.as_mut());
            }
            () = timer.as_mut(), if timer_on => {
                match in_flight.next_due(Instant::now(), header_read, keep_alive(winding_down)) {
                    // As hyper's own header read timeout: the connection ends.
                    Some(Due::HeaderRead) => return,
                    Some(Due::KeepAlive) => {
                        winding_down = true;
                        graceful(conn.as_mut());
                        timer_on = header_read.is_some();
                    }
                    Some(Due::Later(at)) => timer.as_mut().reset(at.into()),
                    None => timer_on = false,
                }
            }
            () = sleep_until(age_at), if !winding_down && age_at.is_some() => {
                winding_down = true;
                graceful(conn.as_mut());
            }
            () = ctx.soft_deadline(), if !soft_passed => {
                soft_passed = true;
                // A client that ignored `Connection: close` or GOAWAY and sits idle:
                // closed now, and counted as idle-closed by the drain. One with a request
                // in flight (or a request head half read) finishes it.
                if in_flight.is_idle() && handle.waits_for_next_request() {
                    handle.close(CloseMode::Graceful, CloseReason::Drained);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The connection in its serve's list while it is served (for shedding).
struct Registered<'a> {
    ctx: &'a Ctx,
    id: crate::ConnectionId,
}

impl<'a> Registered<'a> {
    fn new(ctx: &'a Ctx, in_flight: &Arc<InFlight>) -> Self {
        let id = in_flight.handle().id();
        ctx.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, in_flight.clone());
        Self { ctx, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.ctx
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
