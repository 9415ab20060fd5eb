//! The supervisor's mailbox: what listeners and streams tell it, each as a method, so
//! that the messages themselves stay private to the supervisor.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::report::DrainReport;
use crate::config::CloseMode;
use crate::state::CloseReason;

/// Messages to the supervisor, in the order they were sent.
#[derive(Debug)]
pub(super) enum Msg {
    /// A connection was accepted into slot `index`.
    Register(u32),
    /// The application shut down its write half.
    LocalFin(u32),
    /// The application read EOF (the kernel watcher may not have seen the FIN).
    PeerFin(u32),
    /// The application wrote, and the supervisor had asked to hear of it.
    Wrote(u32),
    /// The peer started owing data, and the supervisor had asked to hear of it.
    Receiving(u32),
    /// The application is done with the stream; with a socket to close for it, if data
    /// was still on its way.
    Released(u32, Option<Handover>),
    /// The task serving the connection (slot, generation), spawned through the library.
    Task(u32, u32, AbortHandle),
    /// Close the connection (slot, generation) on request, for `reason`.
    Close(u32, u32, CloseMode, CloseReason),
    Drain(DrainRequest),
    /// The listener is gone: once its last connection is too, the supervisor ends.
    ListenerClosed,
}

/// A socket whose application dropped it while data was still on its way to the peer:
/// the supervisor keeps it open until that data is delivered (a lingering close).
#[derive(Debug)]
pub(crate) struct Handover {
    /// A duplicate of the application's descriptor, taken before it closed its own.
    pub(crate) fd: OwnedFd,
    /// Whether our FIN was already sent (the application shut down its write half, or
    /// the library closed the connection).
    pub(crate) fin_sent: bool,
}

/// Asks the supervisor to drain every connection (see `TcpListener::drain`).
#[derive(Debug)]
pub(super) struct DrainRequest {
    pub(super) soft: Duration,
    pub(super) hard: Duration,
    /// Whether the soft deadline half-closes the connections idle between requests (the
    /// plain drain) or leaves that to the HTTP layer, which knows which requests are in
    /// flight (the framework serves).
    pub(super) half_close: bool,
    pub(super) reply: oneshot::Sender<DrainReport>,
}

/// The sending side of the supervisor's mailbox. Sending never blocks and never fails
/// visibly: a supervisor that is gone has nothing left to do with the message.
#[derive(Debug, Clone)]
pub(crate) struct Tx(mpsc::UnboundedSender<Msg>);

/// The receiving side, for the supervisor.
#[derive(Debug)]
pub(crate) struct Rx(mpsc::UnboundedReceiver<Msg>);

impl Rx {
    pub(super) async fn recv(&mut self) -> Option<Msg> {
        self.0.recv().await
    }
}

/// A new mailbox.
pub(crate) fn channel() -> (Tx, Rx) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Tx(tx), Rx(rx))
}

impl Tx {
    fn send(&self, msg: Msg) {
        let _ = self.0.send(msg);
    }

    pub(crate) fn register(&self, index: u32) {
        self.send(Msg::Register(index));
    }

    pub(crate) fn local_fin(&self, index: u32) {
        self.send(Msg::LocalFin(index));
    }

    pub(crate) fn peer_fin(&self, index: u32) {
        self.send(Msg::PeerFin(index));
    }

    pub(crate) fn wrote(&self, index: u32) {
        self.send(Msg::Wrote(index));
    }

    pub(crate) fn receiving(&self, index: u32) {
        self.send(Msg::Receiving(index));
    }

    pub(crate) fn released(&self, index: u32, handover: Option<Handover>) {
        self.send(Msg::Released(index, handover));
    }

    pub(crate) fn task(&self, index: u32, gen: u32, task: AbortHandle) {
        self.send(Msg::Task(index, gen, task));
    }

    /// Closes the connection (slot, generation) for `reason`, if it is still open. A
    /// drain counts a connection it closes for `Drained` before the hard deadline as
    /// idle-closed.
    pub(crate) fn close(&self, index: u32, gen: u32, mode: CloseMode, reason: CloseReason) {
        self.send(Msg::Close(index, gen, mode, reason));
    }

    /// Starts a drain; the report comes on the receiver by the hard deadline. With
    /// `half_close`, the soft deadline half-closes the connections idle between requests.
    pub(crate) fn drain(
        &self,
        soft: Duration,
        hard: Duration,
        half_close: bool,
    ) -> oneshot::Receiver<DrainReport> {
        let (reply, report) = oneshot::channel();
        self.send(Msg::Drain(DrainRequest {
            soft,
            hard,
            half_close,
            reply,
        }));
        report
    }

    pub(crate) fn listener_closed(&self) {
        self.send(Msg::ListenerClosed);
    }
}
