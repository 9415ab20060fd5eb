//! The supervisor's mailbox: what listeners, streams and serves tell it, each as a method
//! on [`Tx`], so that the messages themselves are read in one place (the supervisor).
//! Every message about a connection names it by its [`ConnectionId`], slot and
//! generation, so that a message about an earlier occupant of a slot is never taken for
//! the current one's.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::config::CloseMode;
use crate::id::ConnectionId;
use crate::state::CloseReason;
use crate::stats::DrainReport;

/// Messages to the supervisor, in the order they were sent.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A connection was accepted.
    Register(ConnectionId),
    /// Something changed that the rules may care about: the application shut down its
    /// write half, read EOF, wrote while the supervisor watched for it, or the peer
    /// started owing data while it watched for that.
    Look(ConnectionId),
    /// The application wrote (or its serve queued data) while the supervisor watched
    /// for it: data may be queued now, for the rules that judge queued data to see. They
    /// see it at a look within the rules' pause (see `Watch::write_watch`), not at once:
    /// a connection that writes often costs one look a pause, and one that ends within
    /// the pause none.
    Wrote(ConnectionId),
    /// The application is done with the stream; with a socket to close for it, if data
    /// was still on its way.
    Released(ConnectionId, Option<Handover>),
    /// The task serving the connection, spawned through the library.
    Task(ConnectionId, AbortHandle),
    /// Close the connection on request, for `reason`.
    Close(ConnectionId, CloseMode, CloseReason),
    /// The connection's serve closes it itself when the library would (over TLS).
    #[cfg(feature = "tls")]
    OwnerCloses(ConnectionId),
    Drain(DrainRequest),
    /// The listener (or the last handle on a connector) is gone: once its last connection
    /// is too, the supervisor ends.
    ListenerClosed,
}

/// A socket whose application dropped it while data was still on its way to the peer:
/// the supervisor keeps it open until that data is delivered (a lingering close).
#[derive(Debug)]
pub(crate) struct Handover {
    /// A duplicate of the application's descriptor, taken before it closed its own.
    pub(crate) fd: OwnedFd,
    /// How the connection ended, for the metrics, if the library did not close it (who
    /// closed first: the peer or the application). Counted when the lingering close
    /// ends, unless it ends in a reset (then the reset's reason is counted instead):
    /// each connection is counted once.
    pub(crate) ending: Option<bool>,
}

/// Asks the supervisor to drain every connection (see `TcpListener::drain`).
#[derive(Debug)]
pub(crate) struct DrainRequest {
    pub(crate) soft: Duration,
    pub(crate) hard: Duration,
    /// Whether the soft deadline half-closes the connections idle between requests (the
    /// plain drain) or leaves that to the HTTP layer, which knows which requests are in
    /// flight (the framework serves).
    pub(crate) half_close: bool,
    pub(crate) reply: oneshot::Sender<DrainReport>,
}

/// The sending side of the supervisor's mailbox. Sending never blocks and never fails
/// visibly: a supervisor that is gone has nothing left to do with the message.
#[derive(Debug, Clone)]
pub(crate) struct Tx(mpsc::UnboundedSender<Msg>);

/// The receiving side, for the supervisor.
#[derive(Debug)]
pub(crate) struct Rx(mpsc::UnboundedReceiver<Msg>);

impl Rx {
    /// Waits for a message, then takes it and whatever else is waiting, up to `limit` in
    /// all, into `batch`; 0 once every sender is gone.
    pub(crate) async fn recv_many(&mut self, batch: &mut Vec<Msg>, limit: usize) -> usize {
        self.0.recv_many(batch, limit).await
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

    pub(crate) fn register(&self, id: ConnectionId) {
        self.send(Msg::Register(id));
    }

    /// Asks the supervisor to look at the connection again (see [`Msg::Look`]).
    pub(crate) fn look(&self, id: ConnectionId) {
        self.send(Msg::Look(id));
    }

    /// Tells the supervisor the application wrote (see [`Msg::Wrote`]).
    pub(crate) fn wrote(&self, id: ConnectionId) {
        self.send(Msg::Wrote(id));
    }

    pub(crate) fn released(&self, id: ConnectionId, handover: Option<Handover>) {
        self.send(Msg::Released(id, handover));
    }

    pub(crate) fn task(&self, id: ConnectionId, task: AbortHandle) {
        self.send(Msg::Task(id, task));
    }

    /// Closes the connection for `reason`, if it is still open. A drain counts a
    /// connection it closes for `Drained` before the hard deadline as idle-closed.
    pub(crate) fn close(&self, id: ConnectionId, mode: CloseMode, reason: CloseReason) {
        self.send(Msg::Close(id, mode, reason));
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

    #[cfg(feature = "tls")]
    pub(crate) fn owner_closes(&self, id: ConnectionId) {
        self.send(Msg::OwnerCloses(id));
    }

    pub(crate) fn listener_closed(&self) {
        self.send(Msg::ListenerClosed);
    }
}
