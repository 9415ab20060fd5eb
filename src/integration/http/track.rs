//! Which requests are in flight on a connection: a service wrapper counts each request
//! from its call until its response body is done (or dropped), so that the keep-alive
//! timeout runs only between requests and a drain can tell an idle connection from a
//! busy one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ::hyper::body::{Body, Buf, Bytes, Frame, Incoming, SizeHint};
use ::hyper::http::Extensions;
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use pin_project::pin_project;

use crate::time::Stamps;
use crate::ConnectionHandle;

/// Puts what a framework's handlers extract into each request's extensions (axum's
/// `ConnectInfo`, tonic's `TcpConnectInfo`).
pub(crate) type Extend = fn(&mut Extensions, &ConnectionHandle);

/// The requests in flight on one connection, and since when it has had none.
///
/// Nothing here wakes anyone: the connection's task looks at it when its own single
/// timer fires ([`next_due`](Self::next_due)), and re-arms that timer for the true
/// deadline, so a request costs two atomic updates and a clock read, not a timer.
#[derive(Debug)]
pub(crate) struct InFlight {
    handle: ConnectionHandle,
    requests: AtomicUsize,
    /// When the connection last became idle (a stamp: nanoseconds since the epoch of
    /// `stamps`).
    idle_since: AtomicU64,
    stamps: Stamps,
    /// An HTTP/2 connection: the header read timeout (HTTP/1's) does not apply, and the
    /// client owes nothing between requests (its frames are not a request head).
    http2: AtomicBool,
    /// The bytes written when the connection last became idle: a response still being
    /// written keeps the request timeouts from running.
    written_at_idle: AtomicU64,
    /// Response frames handed to hyper that hyper has not come back from: data waiting for
    /// the peer to make room (an HTTP/2 window, or the socket's buffer).
    holding: AtomicUsize,
    /// Closed to make room under `max_connections` (so not picked twice).
    pub(crate) shed: AtomicBool,
}

/// What the connection's timer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// No request (and no whole request head) for the header read timeout: end it.
    HeaderRead,
    /// No request in flight for the keep-alive timeout: wind it down.
    KeepAlive,
    /// Nothing yet: look again then.
    Later(Instant),
}

impl InFlight {
    pub(crate) fn new(handle: ConnectionHandle, http2: bool) -> Self {
        let in_flight = Self {
            handle,
            requests: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            stamps: Stamps::new(),
            http2: AtomicBool::new(false),
            written_at_idle: AtomicU64::new(0),
            holding: AtomicUsize::new(0),
            shed: AtomicBool::new(false),
        };
        if http2 {
            in_flight.is_http2();
        }
        in_flight
    }

    /// The connection speaks HTTP/2: from now on the peer owes data only while a handler
    /// waits for a request body (a PING, SETTINGS or WINDOW_UPDATE is no request head).
    pub(crate) fn is_http2(&self) {
        if !self.http2.swap(true, Relaxed) {
            self.handle.set_received(true);
        }
    }

    pub(crate) fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.load(Relaxed) == 0
    }

    fn start(&self, version: ::hyper::Version) {
        self.requests.fetch_add(1, Relaxed);
        if version == ::hyper::Version::HTTP_2 {
            self.is_http2();
        }
    }

    fn end(&self) {
        if self.requests.fetch_sub(1, Relaxed) == 1 {
            self.handle.set_owed(false);
            if !self.http2.load(Relaxed) {
                // The next request's head, from its first byte, is owed again.
                self.handle.set_received(false);
            }
            self.idle_since.store(self.stamps.now(), Relaxed);
            self.written_at_idle
                .store(self.handle.bytes_written(), Relaxed);
        }
    }

    /// A response may still have been on its way when the request ended: hyper counts a
    /// request as done when it takes the last frame of its body, with the end of it still
    /// in its own buffer and the kernel's. The idle time counts from when it was
    /// delivered: now, if the kernel still holds data for the client; else when the
    /// kernel last sent data (without `TCP_INFO`: now, if anything was written since).
    /// Returns whether the idle start moved.
    fn settle(&self, now: Instant) -> bool {
        let written = self.handle.bytes_written();
        let moved = written != self.written_at_idle.load(Relaxed);
        let delivered_at = match self.handle.tcp_info() {
            Some(info) if info.has_pending_send() => Some(now),
            Some(info) if moved => now.checked_sub(info.since_data_sent()),
            None if moved => Some(now),
            _ => None,
        };
        self.written_at_idle.store(written, Relaxed);
        let Some(at) = delivered_at else {
            return false;
        };
        let at = self.stamps.stamp(at);
        self.idle_since.fetch_max(at, Relaxed) < at
    }

    /// The first of the timeouts given (each `None` if off) that has run out at `now`,
    /// counted from when the last request ended (or the connection began): the header
    /// read timeout first (HTTP/1 only; hyper counts it from when it starts waiting for
    /// the next request head), then the keep-alive timeout. Neither runs while a request
    /// is in flight, however long it takes; then it looks again one timeout later.
    pub(crate) fn next_due(
        &self,
        now: Instant,
        header_read: Option<Duration>,
        keep_alive: Option<Duration>,
    ) -> Option<Due> {
        let header_read = header_read.filter(|_| !self.http2.load(Relaxed));
        let since = self.idle_since.load(Relaxed);
        let since = self.is_idle().then(|| self.stamps.instant(since));
        match due(now, since, header_read, keep_alive) {
            // Not idle while the last response was still on its way: the timeouts count
            // from when it was delivered, and closing before would cut it off.
            Some(Due::HeaderRead | Due::KeepAlive) if self.settle(now) => {
                self.next_due(now, header_read, keep_alive)
            }
            due => due,
        }
    }
}

/// [`InFlight::next_due`] for a connection idle since `since` (`None`: a request is in
/// flight).
fn due(
    now: Instant,
    since: Option<Instant>,
    header_read: Option<Duration>,
    keep_alive: Option<Duration>,
) -> Option<Due> {
    let shortest = header_read.into_iter().chain(keep_alive).min()?;
    let Some(since) = since else {
        return Some(Due::Later(crate::time::later(now, shortest)));
    };
    let at = |t: Duration| crate::time::later(since, t);
    if header_read.is_some_and(|t| at(t) <= now) {
        return Some(Due::HeaderRead);
    }
    if keep_alive.is_some_and(|t| at(t) <= now) {
        return Some(Due::KeepAlive);
    }
    Some(Due::Later(at(shortest)))
}

/// Ends one request's count when dropped: with its response body, or with its future if
/// the response never came.
struct RequestGuard(Arc<InFlight>);

impl RequestGuard {
    fn new(in_flight: Arc<InFlight>, version: ::hyper::Version) -> Self {
        in_flight.start(version);
        Self(in_flight)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The connection's service, counting its requests and giving each the connection's
/// handle (and, through `extend`, what the framework's handlers extract).
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    in_flight: Arc<InFlight>,
    handle: ConnectionHandle,
    extend: Extend,
}

impl<S> Tracked<S> {
    pub(crate) fn new(
        inner: S,
        in_flight: Arc<InFlight>,
        handle: ConnectionHandle,
        extend: Extend,
    ) -> Self {
        Self {
            inner,
            in_flight,
            handle,
            extend,
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::new(self.in_flight.clone(), request.version());
        // The request head is in: the client owes nothing more unless a handler waits for
        // more of its body (which the body says, while it waits).
        self.handle.set_received(true);
        let mut request = request.map(|inner| RequestBody {
            owed: (!inner.is_end_stream()).then(|| self.handle.clone()),
            inner,
        });
        // Each entry costs an allocation per request: only what the framework's handlers
        // take (see the serves' docs).
        (self.extend)(request.extensions_mut(), &self.handle);
        TrackedFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

/// A request's body under a framework serve: hyper's [`Incoming`], which tells the
/// library when a handler waits for more of it. While it waits the client owes data, and
/// `min_receive_rate` judges how fast it sends it; otherwise it owes nothing until its
/// next request, however long the handler takes (or whether it reads the body at all).
///
/// It is what [`hyper::serve`](crate::integration::hyper::serve)'s service receives
/// (`Request<RequestBody>`); axum and tonic take it as any other body.
#[pin_project]
pub struct RequestBody {
    #[pin]
    inner: Incoming,
    /// Told while a handler waits for more of the body (`None` once it is all in).
    owed: Option<ConnectionHandle>,
}

impl RequestBody {
    /// hyper's body inside.
    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ::hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(handle) = this.owed.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                handle.set_owed(true);
                Poll::Pending
            }
            Poll::Ready(frame) => {
                handle.set_owed(false);
                if frame.is_none() {
                    *this.owed = None;
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

/// The response future: hands the request's count on to the response body.
#[pin_project]
pub(crate) struct TrackedFuture<F> {
    #[pin]
    inner: F,
    guard: Option<RequestGuard>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(result.map(|response| {
            response.map(|inner| TrackedBody {
                inner,
                guard,
                held: None,
                rest: Bytes::new(),
            })
        }))
    }
}

/// A response body whose request counts as in flight until it is done, and whose data
/// handed to hyper counts as queued until hyper comes back for more.
///
/// Data goes to hyper in slices of at most [`SLICE`] bytes, so that hyper comes back for
/// more while a response waits for the peer: a body of one big frame (axum's `Vec<u8>`,
/// `Bytes`, `String`) would otherwise be handed over whole as the end of the stream, and
/// wait in hyper's HTTP/2 buffers behind a shut window with nothing held here, unseen by
/// `min_send_rate`. Slicing a `Bytes` copies nothing.
#[pin_project]
pub(crate) struct TrackedBody<B> {
    #[pin]
    inner: B,
    guard: Option<RequestGuard>,
    held: Option<Held>,
    /// What is left of the inner body's current data frame.
    rest: Bytes,
}

/// The largest slice of response data handed to hyper at once: 64 KiB, the default
/// HTTP/2 window, so that only the last slice of a response can wait unheld.
const SLICE: usize = 64 * 1024;

/// A frame of response data hyper took and has not come back from: hyper waits for the
/// peer to make room (an HTTP/2 stream's window, the socket's buffer). While any is
/// held, the connection's data counts as queued for the send rules (`min_send_rate`),
/// though the kernel's queue may be empty.
struct Held(Arc<InFlight>);

impl Held {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        if in_flight.holding.fetch_add(1, Relaxed) == 0 {
            in_flight.handle.set_user_queued(true);
        }
        Self(in_flight.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.holding.fetch_sub(1, Relaxed) == 1 {
            self.0.handle.set_user_queued(false);
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // Hyper came back for more: what it held is on its way.
        this.held.take();
        let slice = if this.rest.is_empty() {
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                None => {
                    this.guard.take();
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                // A frame of one slice or less (most) goes as it is.
                Ok(mut data) if data.remaining() <= SLICE => data.copy_to_bytes(data.remaining()),
                Ok(mut data) => {
                    *this.rest = data.copy_to_bytes(data.remaining());
                    this.rest.split_to(SLICE)
                }
                Err(other) => {
                    // Trailers: no data to slice or hold.
                    return Poll::Ready(Some(Ok(
                        other.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                    )));
                }
            }
        } else {
            this.rest.split_to(this.rest.len().min(SLICE))
        };
        if !this.rest.is_empty() || !this.inner.is_end_stream() {
            if let Some(RequestGuard(in_flight)) = this.guard.as_ref() {
                *this.held = Some(Held::new(in_flight));
            }
        }
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn no_timeout_no_timer() {
        assert_eq!(due(Instant::now(), None, None, None), None);
    }

    #[test]
    fn a_request_in_flight_postpones_both_by_the_shortest() {
        let now = Instant::now();
        let d = due(now, None, Some(3 * S), Some(2 * S));
        assert_eq!(d, Some(Due::Later(now + 2 * S)));
    }

    #[test]
    fn idle_runs_out_the_header_read_timeout_first() {
        let since = Instant::now();
        let (hr, ka) = (Some(2 * S), Some(3 * S));
        assert_eq!(
            due(since + S, Some(since), hr, ka),
            Some(Due::Later(since + 2 * S))
        );
        assert_eq!(
            due(since + 2 * S, Some(since), hr, ka),
            Some(Due::HeaderRead)
        );
        // Both due: the connection ends (the keep-alive would only wind it down).
        assert_eq!(
            due(since + 9 * S, Some(since), hr, ka),
            Some(Due::HeaderRead)
        );
    }

    #[test]
    fn keep_alive_alone_winds_down() {
        let since = Instant::now();
        assert_eq!(
            due(since + S, Some(since), None, Some(S)),
            Some(Due::KeepAlive)
        );
        assert_eq!(
            due(since, Some(since), None, Some(S)),
            Some(Due::Later(since + S))
        );
    }
}
