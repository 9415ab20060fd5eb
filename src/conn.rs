//! Per-connection shared state: written by the stream on the hot path (two plain relaxed
//! counters), read and acted on by the supervisor.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::state::{flags, CloseReason, ConnectionState};
use crate::stats::TcpInfo;
use crate::supervisor::{Msg, Shared};
use crate::sys::{self, SocketGuard};

/// Set once the application has dropped the stream; no more gauge updates after it.
const RELEASED: u8 = 0x80;

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted_at: Instant,
    /// Written only by the stream's `poll_read` (one writer), read by anyone.
    pub(crate) bytes_read: AtomicU64,
    /// Written only by the stream's `poll_write` (one writer), read by anyone.
    pub(crate) bytes_written: AtomicU64,
    flags: AtomicU8,
    /// 0 = none, otherwise `CloseReason::index() + 1`.
    reason: AtomicU8,
    /// errno the supervisor took from the socket (`SO_ERROR`), surfaced to the
    /// application's next read or write so that no error turns into a clean EOF.
    kernel_error: AtomicI32,
    /// errno the application's own read or write got from the kernel (it took the
    /// read-once socket error before the supervisor could), for labelling the close.
    app_error: AtomicI32,
    pub(crate) socket: SocketGuard,
    changed: Notify,
    abort: Mutex<Option<AbortHandle>>,
    pub(crate) span: tracing::Span,
    pub(crate) shared: Arc<Shared>,
}

impl Conn {
    pub(crate) fn new(id: u64, peer: SocketAddr, socket: SocketGuard, shared: Arc<Shared>) -> Self {
        shared.counters.enter_state(ConnectionState::Open);
        Self {
            id,
            peer,
            accepted_at: Instant::now(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            reason: AtomicU8::new(0),
            kernel_error: AtomicI32::new(0),
            app_error: AtomicI32::new(0),
            socket,
            changed: Notify::new(),
            abort: Mutex::new(None),
            span: tracing::info_span!("tcp_hygiene::conn", id, %peer),
            shared,
        }
    }

    #[inline]
    pub(crate) fn add_read(&self, n: usize) {
        // Single writer: a load and a store, no read-modify-write instruction.
        self.bytes_read.store(
            self.bytes_read.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
    }

    #[inline]
    pub(crate) fn add_written(&self, n: usize) {
        self.bytes_written.store(
            self.bytes_written.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
    }

    pub(crate) fn flags(&self) -> u8 {
        self.flags.load(Relaxed)
    }

    pub(crate) fn state(&self) -> ConnectionState {
        ConnectionState::from_flags(self.flags())
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }

    /// Sets `flag`; returns whether it was newly set. Updates the gauges, logs the state
    /// change and wakes everyone waiting on the connection.
    pub(crate) fn set_flag(&self, flag: u8) -> bool {
        let old = self.flags.fetch_or(flag, Relaxed);
        if old & flag != 0 {
            return false;
        }
        let (from, to) = (
            ConnectionState::from_flags(old),
            ConnectionState::from_flags(old | flag),
        );
        if from != to {
            if old & RELEASED == 0 {
                self.shared.counters.leave_state(from);
                self.shared.counters.enter_state(to);
            }
            tracing::debug!(parent: &self.span, from = %from, to = %to, "state change");
        }
        self.changed.notify_waiters();
        true
    }

    /// Marks the connection closed by the library for `reason` (the first reason wins)
    /// and counts it. Returns false if it was already closed.
    pub(crate) fn mark_closed(&self, reason: CloseReason) -> bool {
        if self
            .reason
            .compare_exchange(0, reason.index() as u8 + 1, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.shared.counters.closed_by_reason[reason.index()].fetch_add(1, Relaxed);
        self.set_flag(flags::CLOSED);
        true
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        match self.reason.load(Relaxed) {
            0 => None,
            n => CloseReason::from_index(n as usize - 1),
        }
    }

    /// The errno the application's own I/O got, if any.
    pub(crate) fn app_error(&self) -> Option<i32> {
        match self.app_error.load(Relaxed) {
            0 => None,
            errno => Some(errno),
        }
    }

    pub(crate) fn set_kernel_error(&self, errno: i32) {
        let _ = self
            .kernel_error
            .compare_exchange(0, errno, Relaxed, Relaxed);
    }

    /// The error the application should see instead of `err` (or instead of EOF when
    /// `err` is `None`), if the library knows better. Only called off the hot path.
    pub(crate) fn explain(&self, err: Option<io::Error>) -> Option<io::Error> {
        if let Some(errno) = err.as_ref().and_then(io::Error::raw_os_error) {
            let _ = self.app_error.compare_exchange(0, errno, Relaxed, Relaxed);
        }
        match self.kernel_error.load(Relaxed) {
            0 => match (err, self.close_reason()) {
                (Some(e), Some(reason)) => Some(io::Error::new(
                    e.kind(),
                    crate::error::Closed { reason, source: e },
                )),
                (err, _) => err,
            },
            errno => Some(io::Error::from_raw_os_error(errno)),
        }
    }

    /// The application read EOF: the peer's FIN, seen from the application's side.
    pub(crate) fn observed_eof(&self) {
        self.set_flag(flags::PEER_FIN);
    }

    /// The application shut down its write half.
    pub(crate) fn observed_local_shutdown(&self) {
        if self.set_flag(flags::LOCAL_FIN) {
            let _ = self.shared.tx.send(Msg::LocalFin(self.id));
        }
    }

    /// Waits until any flag changes after this call, or until `done` holds.
    pub(crate) async fn wait_until(&self, done: impl Fn(u8) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self.flags()) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn tcp_info(&self) -> Option<TcpInfo> {
        self.socket.with(sys::tcp_info).and_then(Result::ok)
    }

    pub(crate) fn set_abort_handle(&self, handle: AbortHandle) {
        *self.abort.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Aborts the task that owns the connection, if it was spawned through the library.
    pub(crate) fn abort_task(&self) -> bool {
        match self.abort.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// The application is done with the descriptor (dropped the stream or took it back).
    /// Must run before the descriptor is closed.
    pub(crate) fn release(&self) {
        self.socket.release();
        let old = self.flags.fetch_or(RELEASED, Relaxed);
        if old & RELEASED != 0 {
            return;
        }
        let counters = &self.shared.counters;
        counters.leave_state(ConnectionState::from_flags(old));
        counters.released.fetch_add(1, Relaxed);
        self.abort.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.shared.tx.send(Msg::Released(self.id));
        self.shared.on_release(self.peer.ip());
        self.changed.notify_waiters();
    }

    pub(crate) fn is_released(&self) -> bool {
        self.has(RELEASED)
    }
}
