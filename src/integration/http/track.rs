//! Which requests are in flight on a connection: a service wrapper counts each request
//! from its call until its response body is done (or dropped), so that the keep-alive
//! timeout runs only between requests and a drain can tell an idle connection from a
//! busy one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ::hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use ::hyper::http::Extensions;
use ::hyper::service::Service;
use ::hyper::{Request, Response};
use pin_project::pin_project;
use tokio::sync::Notify;

use crate::ConnectionHandle;

/// Puts what a framework's handlers extract into each request's extensions (axum's
/// `ConnectInfo`, tonic's `TcpConnectInfo`).
pub(crate) type Extend = fn(&mut Extensions, &ConnectionHandle);

/// The requests in flight on one connection.
#[derive(Debug)]
pub(crate) struct InFlight {
    handle: ConnectionHandle,
    requests: AtomicUsize,
    /// When the connection last became idle (nanoseconds since `epoch`).
    idle_since: AtomicU64,
    epoch: Instant,
    changed: Notify,
}

impl InFlight {
    pub(crate) fn new(handle: ConnectionHandle) -> Self {
        Self {
            handle,
            requests: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
            changed: Notify::new(),
        }
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.load(Relaxed) == 0
    }

    fn start(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    fn end(&self) {
        if self.requests.fetch_sub(1, Relaxed) == 1 {
            // The next request's head, from its first byte, is owed again.
            self.handle.set_received(false);
            let since = self
                .epoch
                .elapsed()
                .as_nanos()
                .try_into()
                .unwrap_or(u64::MAX);
            self.idle_since.store(since, Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// Resolves once no request has been in flight for `timeout`: the keep-alive timeout,
    /// which never runs while a request is being served, however long it takes.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.is_idle() {
                changed.await;
                continue;
            }
            let since = Duration::from_nanos(self.idle_since.load(Relaxed));
            let at = crate::idle::later(crate::idle::later(self.epoch, since), timeout);
            if Instant::now() >= at {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = changed => {}
            }
        }
    }
}

/// Ends one request's count when dropped: with its response body, or with its future if
/// the response never came.
struct RequestGuard(Arc<InFlight>);

impl RequestGuard {
    fn new(in_flight: Arc<InFlight>) -> Self {
        in_flight.start();
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
        let guard = RequestGuard::new(self.in_flight.clone());
        let mut request = request.map(|inner| {
            let received = if inner.is_end_stream() {
                self.handle.set_received(true);
                None
            } else {
                Some(self.handle.clone())
            };
            RequestBody { inner, received }
        });
        let extensions = request.extensions_mut();
        extensions.insert(self.handle.clone());
        (self.extend)(extensions, &self.handle);
        TrackedFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

/// A request's body under a framework serve: hyper's [`Incoming`], which tells the
/// library when it has been read to the end. Until then the client owes data, and
/// `min_receive_rate` judges how fast it sends it; after, it owes nothing until its next
/// request, however long the handler takes.
///
/// It is what [`hyper::serve`](crate::integration::hyper::serve)'s service receives
/// (`Request<RequestBody>`); axum and tonic take it as any other body.
#[pin_project]
pub struct RequestBody {
    #[pin]
    inner: Incoming,
    /// Told once the body has been read to the end.
    received: Option<ConnectionHandle>,
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
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            if let Some(handle) = this.received.take() {
                handle.set_received(true);
            }
        }
        Poll::Ready(frame)
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
        Poll::Ready(result.map(|response| response.map(|inner| TrackedBody { inner, guard })))
    }
}

/// A response body whose request counts as in flight until it is done.
#[pin_project]
pub(crate) struct TrackedBody<B> {
    #[pin]
    inner: B,
    guard: Option<RequestGuard>,
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
