//! What a drain reports.

/// How the connections of a drained listener ended, from
/// [`TcpListener::drain`](crate::TcpListener::drain).
///
/// Each connection open when the drain began is counted exactly once:
/// `connections == finished + idle_closed + forced`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections open when the drain began.
    pub connections: usize,
    /// Ended before the hard deadline without being half-closed by the drain: the
    /// application dropped the stream (including after a timeout or kernel failure
    /// during the drain).
    pub finished: usize,
    /// Idle between requests after the soft deadline: the library half-closed them (FIN
    /// to the peer, EOF to the application's read) and they ended before the hard
    /// deadline.
    pub idle_closed: usize,
    /// Still open at the hard deadline: the library closed them and aborted their
    /// tasks, if spawned through [`TcpListener::serve`](crate::TcpListener::serve).
    pub forced: usize,
}
