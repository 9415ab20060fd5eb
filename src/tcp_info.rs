//! The kernel's own view of a connection: `TCP_INFO` (Linux) and the TCP states.

use std::fmt;
use std::time::Duration;

/// The kernel's TCP state of a socket (Linux numbering in `TCP_INFO` and `/proc/net/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum KernelState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    /// Closed: reset, timed out, or finished (no longer in the kernel's tables).
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    #[default]
    Unknown,
}

impl KernelState {
    /// From the kernel's numbering (`TCP_ESTABLISHED` = 1 …).
    pub fn from_linux(n: u8) -> Self {
        use KernelState::*;
        match n {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            _ => Unknown,
        }
    }

    /// The name `ss` prints (`ESTAB` is spelled out as `ESTABLISHED`).
    pub fn as_str(self) -> &'static str {
        use KernelState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT_1",
            FinWait2 => "FIN_WAIT_2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
            Unknown => "UNKNOWN",
        }
    }

    /// Whether the peer's FIN has been received in this state.
    pub fn peer_fin_received(self) -> bool {
        use KernelState::*;
        matches!(self, CloseWait | LastAck | Closing | TimeWait)
    }
}

impl fmt::Display for KernelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kernel's own view of one connection (`getsockopt(TCP_INFO)`, Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct TcpInfo {
    /// The kernel's TCP state.
    pub state: KernelState,
    /// Retransmissions of the current unacknowledged segment.
    pub retransmits: u8,
    /// Unanswered keepalive or zero-window probes.
    pub probes: u8,
    /// Exponential back-off of the retransmission timer.
    pub backoff: u8,
    /// Smoothed round-trip time, µs.
    pub rtt_us: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Retransmissions over the connection's life.
    pub total_retrans: u32,
    /// Bytes the peer has acknowledged.
    pub bytes_acked: u64,
    /// Bytes received from the peer.
    pub bytes_received: u64,
    /// Bytes written by the application and not yet sent.
    pub notsent_bytes: u32,
    /// Milliseconds since data was last received.
    pub last_data_recv_ms: u32,
    /// Milliseconds since data was last sent.
    pub last_data_sent_ms: u32,
    /// Milliseconds since the peer's last acknowledgement (of data, a FIN, a probe).
    pub last_ack_recv_ms: u32,
}

impl TcpInfo {
    /// Whether the kernel still holds data for the peer (unsent or unacknowledged).
    pub fn has_pending_send(&self) -> bool {
        self.unacked > 0 || self.notsent_bytes > 0
    }

    /// How long ago data was last received: the kernel's `tcpi_last_data_recv`.
    pub fn since_data_received(&self) -> Duration {
        Duration::from_millis(self.last_data_recv_ms.into())
    }

    /// How long ago data was last sent: the kernel's `tcpi_last_data_sent`.
    pub fn since_data_sent(&self) -> Duration {
        Duration::from_millis(self.last_data_sent_ms.into())
    }
}
