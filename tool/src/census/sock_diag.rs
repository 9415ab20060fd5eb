//! Netlink sock_diag (`NETLINK_SOCK_DIAG`, `inet_diag`), what `ss` uses: dumps of the
//! TCP sockets of this thread's network namespace with their `tcp_info`, and
//! `SOCK_DESTROY` (what `ss -K` uses).
//!
//! A dump asks the kernel for one local port when there is one (`idiag_sport`: the kernel
//! skips the other sockets itself), one request per address family. `tcp_info` comes as
//! raw `INET_DIAG_INFO` bytes and only the timestamps are read from it, so the shorter
//! `tcp_info` of older kernels parses too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, Timer as DiagTimer,
};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};
use tcp_hygiene::KernelState;

use super::socket::{self, SocketRecord, TcpTimes, Timer};

/// Dump replies are at most 32 KiB per read (the kernel caps them there).
const RECV_BUFFER: usize = 64 * 1024;
/// Header of a netlink message, before the `inet_diag_msg`.
const NETLINK_HEADER_LEN: usize = 16;
/// Offset of `idiag_expires` in `inet_diag_msg` (netlink-packet-sock-diag 0.5 drops it for
/// time-wait timers, so it is read from the bytes).
const EXPIRES_OFFSET: usize = 52;

/// A netlink socket speaking sock_diag, in the network namespace it was opened in.
pub(crate) struct DiagSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for DiagSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiagSocket").finish_non_exhaustive()
    }
}

impl DiagSocket {
    /// Opens a sock_diag socket (no privilege needed).
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(DiagSocket {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Every TCP socket (IPv4 and IPv6) whose local port is `port` (or every one), in
    /// `state` (or any state), with its age. `fin_timeout` dates orphaned `FIN_WAIT_2`.
    pub(crate) fn dump(
        &mut self,
        port: Option<u16>,
        state: Option<KernelState>,
        fin_timeout: Duration,
    ) -> io::Result<Vec<SocketRecord>> {
        self.dump_between(port, None, state, fin_timeout)
    }

    /// [`dump`](Self::dump) narrowed to the sockets whose remote port is `remote_port` too,
    /// when given (`idiag_dport`: the kernel skips the others itself).
    pub(crate) fn dump_between(
        &mut self,
        port: Option<u16>,
        remote_port: Option<u16>,
        state: Option<KernelState>,
        fin_timeout: Duration,
    ) -> io::Result<Vec<SocketRecord>> {
        let states = match state {
            Some(state) => state_flag(state)?,
            None => StateFlags::all(),
        };
        let mut sockets = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let mut socket_id = match family {
                AF_INET => SocketId::new_v4(),
                _ => SocketId::new_v6(),
            };
            socket_id.source_port = port.unwrap_or(0);
            socket_id.destination_port = remote_port.unwrap_or(0);
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::INFO,
                states: states.clone(),
                socket_id,
            });
            let sequence = self.send(request, NLM_F_REQUEST | NLM_F_DUMP)?;
            self.receive(sequence, |message, raw| {
                let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) = message
                else {
                    return;
                };
                let record = record(&response, raw, fin_timeout);
                // The kernel filters by port and state already; this only guards against
                // one that ignores the request's fields.
                let wanted = port.is_none_or(|p| record.local.port() == p)
                    && remote_port.is_none_or(|p| record.peer.port() == p)
                    && state.is_none_or(|s| record.state == s);
                if wanted {
                    sockets.push(record);
                }
            })?;
        }
        Ok(sockets)
    }

    /// `SOCK_DESTROY` for the socket `record` describes, addressed by its cookie: if that
    /// socket is gone the kernel answers `ENOENT`, if another one now has its addresses
    /// `ESTALE`. Needs `CAP_NET_ADMIN` (`EPERM`) and `CONFIG_INET_DIAG_DESTROY`
    /// (`EOPNOTSUPP`).
    pub(crate) fn destroy(&mut self, record: &SocketRecord) -> io::Result<()> {
        let cookie = record.cookie.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "no socket cookie to address it by",
            )
        })?;
        let family = match record.local {
            SocketAddr::V4(_) => AF_INET,
            SocketAddr::V6(_) => AF_INET6,
        };
        let request = SockDiagDestroy::new(SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: record.local.port(),
                destination_port: record.peer.port(),
                source_address: record.local.ip(),
                destination_address: record.peer.ip(),
                interface_id: record.interface,
                cookie,
            },
        }));
        let sequence = self.send(request, NLM_F_REQUEST | NLM_F_ACK)?;
        // The answer is an NLMSG_ERROR: code 0 (an ACK) or the errno, which `receive`
        // returns.
        self.receive(sequence, |_, _| {})
    }

    fn send<M>(&mut self, message: M, flags: u16) -> io::Result<u32>
    where
        M: NetlinkSerializable,
        NetlinkPayload<M>: From<M>,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.sequence)
    }

    /// Reads the answers to request `sequence` until it is complete (`NLMSG_DONE`, or the
    /// `NLMSG_ERROR` that acknowledges or refuses it), handing every other message and its
    /// raw `inet_diag_msg` bytes to `each`.
    fn receive(
        &mut self,
        sequence: u32,
        mut each: impl FnMut(NetlinkPayload<SockDiagMessage>, &[u8]),
    ) -> io::Result<()> {
        loop {
            self.buffer.clear();
            let size = match self.socket.recv(&mut self.buffer, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => result?,
            };
            let mut bytes = &self.buffer[..size.min(self.buffer.len())];
            while !bytes.is_empty() {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = (message.header.length as usize).min(bytes.len());
                let raw = bytes.get(NETLINK_HEADER_LEN..length).unwrap_or_default();
                bytes = bytes.get(length.next_multiple_of(4)..).unwrap_or_default();
                if message.header.sequence_number != sequence {
                    continue; // a late answer to an earlier request
                }
                match message.payload {
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(io::Error::from_raw_os_error(done.code.abs()))
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io())
                    }
                    NetlinkPayload::Error(_) => return Ok(()),
                    other => each(other, raw),
                }
            }
        }
    }
}

/// The `idiag_states` bit of `state`.
fn state_flag(state: KernelState) -> io::Result<StateFlags> {
    use KernelState::*;
    Ok(match state {
        Established => StateFlags::ESTABLISHED,
        SynSent => StateFlags::SYN_SENT,
        SynRecv | NewSynRecv => StateFlags::SYN_RECV,
        FinWait1 => StateFlags::FIN_WAIT1,
        FinWait2 => StateFlags::FIN_WAIT2,
        TimeWait => StateFlags::TIME_WAIT,
        Close => StateFlags::CLOSE,
        CloseWait => StateFlags::CLOSE_WAIT,
        LastAck => StateFlags::LAST_ACK,
        Listen => StateFlags::LISTEN,
        Closing => StateFlags::CLOSING,
        // Unknown, and any state the library's `KernelState` gains later.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no such TCP state to ask the kernel for",
            ))
        }
    })
}

/// One dumped socket. `raw` is its `inet_diag_msg` and attributes.
fn record(response: &InetResponse, raw: &[u8], fin_timeout: Duration) -> SocketRecord {
    let header = &response.header;
    let id = &header.socket_id;
    let state = KernelState::from_linux(header.state);
    let times = response
        .nlas
        .iter()
        .find_map(|nla| match nla {
            Nla::TcpInfo(bytes) => tcp_times(bytes),
            _ => None,
        })
        .map(|times| TcpTimes {
            unacked: header.send_queue,
            ..times
        });
    let timer = match header.timer {
        Some(DiagTimer::Retransmit(left, retransmits)) => Timer::Retransmit { left, retransmits },
        Some(DiagTimer::TimeWait) => Timer::TimeWait {
            left: Duration::from_millis(u64::from(expires(raw))),
        },
        Some(DiagTimer::KeepAlive(_)) => Timer::KeepAlive,
        _ => Timer::Other,
    };
    let age = socket::lingered(state, times, timer, fin_timeout);
    SocketRecord {
        state,
        local: SocketAddr::new(id.source_address, id.source_port),
        peer: SocketAddr::new(id.destination_address, id.destination_port),
        inode: u64::from(header.inode),
        recv_queue: header.recv_queue,
        backlog: (state == KernelState::Listen).then_some(header.send_queue),
        lingered: age.map(|a| a.lingered),
        lower_bound: age.is_some_and(|a| a.lower_bound),
        upper_bound: age.and_then(|a| a.upper_bound),
        cookie: Some(id.cookie),
        interface: id.interface_id,
    }
}

/// `idiag_expires` in milliseconds.
fn expires(raw: &[u8]) -> u32 {
    raw.get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// The timestamps of a raw `struct tcp_info`: `tcpi_retransmits` at byte 2, `tcpi_rto` at
/// 8, `tcpi_last_data_sent` at 44, `tcpi_last_data_recv` at 52, `tcpi_last_ack_recv` at 56
/// (there since Linux 2.6, in every kernel's shorter or longer version of the struct).
/// `unacked` is left 0: it comes from the dump's header.
fn tcp_times(info: &[u8]) -> Option<TcpTimes> {
    let word = |offset: usize| {
        info.get(offset..offset + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    Some(TcpTimes {
        last_data_sent_ms: word(44)?,
        last_data_recv_ms: word(52)?,
        last_ack_recv_ms: word(56)?,
        rto_us: word(8)?,
        retransmits: *info.get(2)?,
        unacked: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_with_times(len: usize) -> Vec<u8> {
        let mut info = vec![0u8; len];
        for (offset, value) in [(8, 200_000u32), (44, 1_000), (52, 2_000), (56, 3_000)] {
            if offset + 4 <= len {
                info[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
            }
        }
        info
    }

    #[test]
    fn tcp_info_of_any_length_with_the_timestamps_parses() {
        let expected = Some(TcpTimes {
            last_data_sent_ms: 1_000,
            last_data_recv_ms: 2_000,
            last_ack_recv_ms: 3_000,
            rto_us: 200_000,
            retransmits: 0,
            unacked: 0,
        });
        // Linux 2.6's 104 bytes, 6.x's 280 and whatever comes later.
        for len in [60, 104, 232, 280, 400] {
            assert_eq!(tcp_times(&info_with_times(len)), expected, "{len} bytes");
        }
        assert_eq!(tcp_times(&info_with_times(59)), None);
    }

    #[test]
    fn dumps_a_listener_of_our_own_with_its_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = DiagSocket::open().unwrap();
        // Ours only: a socket elsewhere on the host may use the same port number as
        // its own local port (another test's client, in TIME_WAIT on 127.3.0.1, say).
        let local = listener.local_addr().unwrap();
        let sockets: Vec<_> = diag
            .dump(Some(port), None, Duration::from_secs(60))
            .unwrap()
            .into_iter()
            .filter(|s| s.local == local)
            .collect();
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        let s = &sockets[0];
        assert_eq!(s.state, KernelState::Listen);
        assert_eq!(s.local, listener.local_addr().unwrap());
        assert_eq!(s.recv_queue, 0);
        assert!(s.backlog.is_some_and(|b| b > 0), "{s:?}");
        assert_ne!(s.inode, 0);
        // A state filter that excludes it.
        let none = diag
            .dump(
                Some(port),
                Some(KernelState::CloseWait),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
    }
}
