//! One connection under a framework serve: hyper-util's auto builder drives HTTP, and
//! this decides when to ask it to wind down (the keep-alive timeout, the connection's
//! age, a drain) and when the connection is idle enough to close at a drain's soft
//! deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;

#[cfg(feature = "tls")]
use super::tls::TlsIo;

use super::track::{Due, InFlight, Tracked};
use super::{Ctx, HttpBody, HttpService};
use crate::{CloseMode, CloseReason, ConnectionHandle, TcpStream};

/// Serves HTTP on `stream` until the connection ends: over TLS after the handshake, if the
/// serve has TLS.
pub(super) async fn serve<S, B>(stream: TcpStream, service: S, ctx: Arc<Ctx>)
where
    S: HttpService<B>,
    B: HttpBody,
{
    let handle = stream.handle();
    let in_flight = Arc::new(InFlight::new(handle.clone(), ctx.http2_only));
    // Listed only where shedding may need it; from accept, so that a client stalled in
    // its TLS handshake can be shed too.
    let _registered = ctx
        .shared
        .config
        .max_connections()
        .map(|_| Registered::new(&ctx, &in_flight));
    #[cfg(feature = "tls")]
    if let Some(tls) = &ctx.tls {
        // Boxed: the handshake's and the TLS connection's state would otherwise make
        // every connection's task, plain ones too, the size of a TLS one (7.8 KiB against
        // 4.3), and tokio moves a task's future by value as it spawns it.
        Box::pin(serve_tls(tls, stream, service, &in_flight, &ctx)).await;
        return;
    }
    serve_io(TokioIo::new(stream), false, service, &in_flight, &ctx).await;
}

/// Serves HTTP over TLS on `stream`, after the handshake.
#[cfg(feature = "tls")]
async fn serve_tls<S, B>(
    tls: &super::tls::Tls,
    stream: TcpStream,
    service: S,
    in_flight: &Arc<InFlight>,
    ctx: &Ctx,
) where
    S: HttpService<B>,
    B: HttpBody,
{
    let handle = in_flight.handle();
    let Some(stream) = tls.handshake(stream, handle, &ctx.shared).await else {
        return;
    };
    // From now on a close by the library asks this task first, so that `close_notify`
    // goes before our FIN.
    handle.owner_closes();
    let io = TokioIo::new(TlsIo::new(stream));
    serve_io(io, true, service, in_flight, ctx).await;
}

/// Serves HTTP on `io`, the connection's stream or the TLS stream over it (`tls`).
async fn serve_io<I, S, B>(io: I, tls: bool, service: S, in_flight: &Arc<InFlight>, ctx: &Ctx)
where
    I: ::hyper::rt::Read + ::hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let handle = in_flight.handle();
    let service = Tracked::new(service, in_flight.clone(), handle.clone(), ctx.extend);
    // Pinned here and lent to `drive`: moved into it, the connection would take room in
    // both futures' state.
    if ctx.http2_only {
        let conn = std::pin::pin!(ctx.builder.serve_connection(io, service));
        drive(conn, |c| c.graceful_shutdown(), handle, in_flight, ctx, tls).await;
    } else {
        let conn = std::pin::pin!(ctx.builder.serve_connection_with_upgrades(io, service));
        drive(conn, |c| c.graceful_shutdown(), handle, in_flight, ctx, tls).await;
    }
}

/// How long hyper has to close an idle connection the library asked to close, before
/// the connection's task drops it (the TLS stream, dropped, closes itself): well within
/// the library's grace for it (1 s).
const CLOSING_WAIT: Duration = Duration::from_millis(300);

/// Polls the connection to its end, asking it to wind down (HTTP/1: `Connection: close`
/// after the current response, at once if idle; HTTP/2: GOAWAY) when the keep-alive
/// timeout, the connection's age or a drain says so, and ending it when the header read
/// timeout runs out. The two request timeouts share one timer, re-armed only when it
/// fires (see [`InFlight::next_due`]). Over TLS (`tls`) it also winds the connection down
/// when the library asks to close it, so that `close_notify` goes before our FIN.
async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    handle: &ConnectionHandle,
    in_flight: &InFlight,
    ctx: &Ctx,
    tls: bool,
) {
    let header_read = ctx.header_read_timeout;
    let age_at = ctx.winding_down_at(handle);
    let mut winding_down = false;
    let keep_alive = |winding_down: bool| ctx.keep_alive_timeout.filter(|_| !winding_down);
    let first = in_flight.next_due(Instant::now(), header_read, keep_alive(false));
    let mut timer_on = first.is_some();
    let timer = tokio::time::sleep_until(match first {
        Some(Due::Later(at)) => at.into(),
        _ => tokio::time::Instant::now(),
    });
    tokio::pin!(timer);
    let mut timer_polled = false;
    // Over TLS the library asks before it closes (see `ConnectionHandle::owner_closes`),
    // and wakes the read hyper keeps parked; a busy connection sees it at its next poll.
    let mut asking = tls;
    // Asked while idle: hyper has this long to close the connection itself.
    let mut closing_by = None;
    // A drain: seen (hyper asked to wind down), then its soft deadline (if the serve's own
    // graceful shutdown started it).
    let drain = ctx.shared.drain_started();
    tokio::pin!(drain);
    let mut drain_seen = false;
    let mut soft_at = None;
    let mut soft_passed = false;
    loop {
        // In this order, with no random start: the connection is what wakes the task.
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = close_asked(handle), if asking => {
                asking = false;
                if !winding_down {
                    winding_down = true;
                    graceful(conn.as_mut());
                }
                // Idle: hyper closes it at once (HTTP/1), or after GOAWAY (HTTP/2); if it
                // has not soon, it is dropped and the TLS stream closed below it. A
                // request in flight may finish within the library's grace.
                if in_flight.is_idle() {
                    closing_by = Some(Instant::now() + CLOSING_WAIT);
                }
            }
            () = sleep_until(closing_by), if closing_by.is_some() => return,
            () = drain.as_mut(), if !drain_seen => {
                drain_seen = true;
                soft_at = ctx.soft_at();
                if !winding_down {
                    winding_down = true;
                    graceful(conn.as_mut());
                }
            }
            () = poll_timer(timer.as_mut(), &mut timer_polled), if timer_on => {
                match in_flight.next_due(Instant::now(), header_read, keep_alive(winding_down)) {
                    // As hyper's own header read timeout: the connection ends.
                    Some(Due::HeaderRead) => return,
                    Some(Due::KeepAlive) => {
                        winding_down = true;
                        graceful(conn.as_mut());
                        timer_on = header_read.is_some();
                    }
                    Some(Due::Later(at)) => {
                        timer.as_mut().reset(at.into());
                        timer_polled = false;
                    }
                    None => timer_on = false,
                }
            }
            () = sleep_until(age_at), if !winding_down && age_at.is_some() => {
                winding_down = true;
                graceful(conn.as_mut());
            }
            () = sleep_until(soft_at), if soft_at.is_some() && !soft_passed => {
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

/// Resolves once the library has asked for the connection to be closed. Registers no
/// waker of its own: the library wakes the read the connection's task keeps parked, and
/// any other wake of the task looks again (two atomic loads).
#[cfg(feature = "tls")]
fn close_asked(handle: &ConnectionHandle) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if handle.is_close_asked() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

#[cfg(not(feature = "tls"))]
fn close_asked(_: &ConnectionHandle) -> std::future::Pending<()> {
    std::future::pending()
}

/// The connection's timer, polled only when it may have fired: once after each (re)arm,
/// which registers the task's waker with it, then only once it has fired (`is_elapsed`:
/// the timer driver marks it before it wakes that waker). A poll of a pending `Sleep`
/// registers the waker again at every wake of the task, about 100 instructions of each
/// HTTP/1.1 request.
///
/// A poll counts only if the task had coop budget left: with none, tokio's `Sleep`
/// returns `Pending` before it registers anything (and has the task polled again soon),
/// so a handler that spent the budget inside hyper's poll would otherwise leave the
/// connection without its keep-alive and header read timeouts.
fn poll_timer<'a>(
    mut timer: Pin<&'a mut tokio::time::Sleep>,
    polled: &'a mut bool,
) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| {
        if *polled && !timer.is_elapsed() {
            return std::task::Poll::Pending;
        }
        *polled = tokio::task::coop::has_budget_remaining();
        timer.as_mut().poll(cx)
    })
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
