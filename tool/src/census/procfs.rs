//! What `/proc` says about TCP: the socket tables `/proc/net/tcp` and `/proc/net/tcp6`
//! (the census's fallback when sock_diag is unavailable), the `TcpExt` counters of
//! `/proc/net/netstat`, `tcp_fin_timeout`, and `/proc/net/sockstat`.
//!
//! Everything is read through `/proc/thread-self/net`, so a thread that has entered
//! another network namespace sees that namespace's tables (`/proc/net` is the *process's*
//! namespace, that of its first thread).

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tcp_hygiene::KernelState;

use super::socket::{self, SocketRecord, Timer};

/// `/proc/net/tcp` gives timers in clock ticks (`USER_HZ`), which is 100 on every
/// architecture Rust supports.
const TICKS_PER_SECOND: u64 = 100;

/// Reads `/proc/thread-self/net/NAME` (or `/proc/net/NAME` on kernels before 3.17).
fn read_net(name: &str) -> io::Result<String> {
    match fs::read_to_string(format!("/proc/thread-self/net/{name}")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::read_to_string(format!("/proc/net/{name}"))
        }
        other => other,
    }
}

/// Every TCP socket of this thread's network namespace whose local port is `port` (or
/// every one), from `/proc/net/tcp` and `/proc/net/tcp6`. No `tcp_info` here: only
/// `TIME_WAIT` and handshakes get an age.
pub(crate) fn dump(port: Option<u16>, fin_timeout: Duration) -> io::Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    for name in ["tcp", "tcp6"] {
        let text = match read_net(name) {
            Ok(text) => text,
            // A kernel without IPv6 has no tcp6.
            Err(e) if name == "tcp6" && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        sockets.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| parse_line(line, fin_timeout))
                .filter(|s| port.is_none_or(|p| s.local.port() == p)),
        );
    }
    Ok(sockets)
}

/// One line of `/proc/net/tcp{,6}`:
/// `sl local rem st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …`.
fn parse_line(line: &str, fin_timeout: Duration) -> Option<SocketRecord> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = parse_addr(fields.next()?)?;
    let peer = parse_addr(fields.next()?)?;
    let state = KernelState::from_linux(u8::from_str_radix(fields.next()?, 16).ok()?);
    let (_tx_queue, rx_queue) = fields.next()?.split_once(':')?;
    let (timer, when) = fields.next()?.split_once(':')?;
    let retransmits = u8::from_str_radix(fields.next()?, 16).unwrap_or(u8::MAX);
    let _uid = fields.next()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let left = Duration::from_millis(u64::from_str_radix(when, 16).ok()? * 1000 / TICKS_PER_SECOND);
    let timer = match timer {
        "01" => Timer::Retransmit { left, retransmits },
        "03" => Timer::TimeWait { left },
        _ => Timer::Other,
    };
    let age = socket::lingered(state, None, timer, fin_timeout);
    Some(SocketRecord {
        state,
        local,
        peer,
        inode,
        recv_queue: u32::from_str_radix(rx_queue, 16).ok()?,
        backlog: None,
        lingered: age.map(|a| a.lingered),
        lower_bound: age.is_some_and(|a| a.lower_bound),
        upper_bound: age.and_then(|a| a.upper_bound),
        cookie: None,
        interface: 0,
    })
}

/// `HEXIP:HEXPORT`; the address is the kernel's `__be32` words printed as host-order
/// numbers (one for IPv4, four for IPv6).
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = [0u8; 16];
    let words = ip.len() / 8;
    if ip.len() % 8 != 0 || !(words == 1 || words == 4) {
        return None;
    }
    for (i, chunk) in bytes.chunks_exact_mut(4).take(words).enumerate() {
        let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let ip = if words == 1 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    Some(SocketAddr::new(ip, port))
}

/// The namespace's `TcpExt` counters about accept queues, since boot (or since the
/// namespace was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ListenCounters {
    /// `ListenOverflows`: handshakes dropped because an accept queue was full.
    pub(crate) overflows: u64,
    /// `ListenDrops`: every drop at a listener, overflows included.
    pub(crate) drops: u64,
}

/// `ListenOverflows` and `ListenDrops` from `/proc/net/netstat`; `None` if unreadable.
pub(crate) fn listen_counters() -> Option<ListenCounters> {
    parse_netstat(&read_net("netstat").ok()?)
}

fn parse_netstat(text: &str) -> Option<ListenCounters> {
    // Pairs of lines: `TcpExt: Name1 Name2 …` then `TcpExt: 1 2 …`.
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    let mut counters = ListenCounters::default();
    let mut found = 0;
    for (name, value) in names.zip(values).skip(1) {
        let slot = match name {
            "ListenOverflows" => &mut counters.overflows,
            "ListenDrops" => &mut counters.drops,
            _ => continue,
        };
        *slot = value.parse().ok()?;
        found += 1;
    }
    (found == 2).then_some(counters)
}

/// `net.ipv4.tcp_fin_timeout` of this thread's namespace (60 s if unreadable).
pub(crate) fn fin_timeout() -> Duration {
    fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// `net.ipv4.ip_local_port_range` of this thread's namespace: the local ports its
/// outgoing connections get (Linux's default, 32768-60999, if unreadable).
pub(crate) fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut words = s.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((words.next()??, words.next()??))
        });
    match range {
        Some((low, high)) if low <= high => low..=high,
        _ => 32768..=60999,
    }
}

/// Host TCP totals from `/proc/net/sockstat`.
///
/// Less than it seems, measured on Linux 6.18:
///
/// - [`orphan`](Self::orphan) is **host-wide**: every network namespace reads the same
///   number, whichever namespace the orphans live in.
/// - [`time_wait`](Self::time_wait) counts time-wait *slots* of this namespace: real
///   `TIME_WAIT` sockets **and orphaned `FIN_WAIT_2` sockets**, which the kernel parks in
///   the same kind of slot until `tcp_fin_timeout`.
/// - [`inuse`](Self::inuse) is per namespace.
///
/// For per-port, per-namespace counts that keep these apart, use
/// [`Census`](crate::Census): its orphans and states come from the socket tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SockStat {
    /// TCP sockets in use in this network namespace (`inuse`), time-wait slots excluded.
    pub inuse: u64,
    /// Orphaned sockets on the whole host (`orphan`): closed by their application, still
    /// in `FIN_WAIT_1`, `LAST_ACK`, `CLOSING` or `FIN_WAIT_2` as full sockets. Not per
    /// namespace, and without the orphaned `FIN_WAIT_2` counted in `time_wait`.
    pub orphan: u64,
    /// Time-wait slots in this namespace (`tw`): `TIME_WAIT` sockets plus orphaned
    /// `FIN_WAIT_2` sockets waiting out `tcp_fin_timeout`.
    pub time_wait: u64,
}

impl SockStat {
    /// Reads `/proc/net/sockstat` as the calling thread sees it (its network namespace).
    ///
    /// # Errors
    ///
    /// If the file cannot be read (not Linux, or no procfs).
    pub fn read() -> io::Result<Self> {
        Ok(Self::parse(&read_net("sockstat")?))
    }

    fn parse(text: &str) -> Self {
        let mut stat = SockStat::default();
        for line in text.lines().filter(|l| l.starts_with("TCP:")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words[1..].chunks(2) {
                if let [key, value] = pair {
                    let value = value.parse().unwrap_or(0);
                    match *key {
                        "inuse" => stat.inuse = value,
                        "orphan" => stat.orphan = value,
                        "tw" => stat.time_wait = value,
                        _ => {}
                    }
                }
            }
        }
        stat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIN: Duration = Duration::from_secs(60);

    #[test]
    fn parses_proc_net_tcp_lines() {
        let line = "   3: 0100007F:1F90 0100007F:D2B4 08 00000000:00000001 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1";
        let s = parse_line(line, FIN).unwrap();
        assert_eq!(s.state, KernelState::CloseWait);
        assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.peer, "127.0.0.1:53940".parse().unwrap());
        assert_eq!((s.inode, s.recv_queue, s.lingered), (12345, 1, None));

        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        let s = parse_line(v6, FIN).unwrap();
        assert_eq!(s.state, KernelState::Listen);
        assert_eq!(s.local, "[::1]:80".parse().unwrap());
        assert_eq!(s.recv_queue, 3);
        assert_eq!(parse_line("garbage", FIN), None);
    }

    #[test]
    fn time_wait_lines_carry_their_timer() {
        // 45 s left (4500 ticks = 0x1194): lingered 15 s. Inode 0: no descriptor.
        let tw = "  9: 0100007F:1F90 0100007F:C350 06 00000000:00000000 03:00001194 00000000     0        0 0 3 0000000000000000";
        let s = parse_line(tw, FIN).unwrap();
        assert_eq!(s.state, KernelState::TimeWait);
        assert_eq!(s.lingered, Some(Duration::from_secs(15)));
        assert!(!s.is_orphan());
        // The same slot holding an orphaned FIN_WAIT_2.
        let fw2 = tw.replace(" 06 ", " 05 ");
        let s = parse_line(&fw2, Duration::from_secs(30)).unwrap();
        assert_eq!(s.state, KernelState::FinWait2);
        assert!(s.is_orphan());
    }

    #[test]
    fn netstat_listen_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPBacklogDrop\n\
                    TcpExt: 0 7 9 1\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse_netstat(text),
            Some(ListenCounters {
                overflows: 7,
                drops: 9
            })
        );
        assert_eq!(parse_netstat("TcpExt: A\nTcpExt: 1\n"), None);
    }

    #[test]
    fn sockstat_fields() {
        let text = "sockets: used 100\nTCP: inuse 5 orphan 2 tw 7 alloc 9 mem 1\nUDP: inuse 1\n";
        let stat = SockStat::parse(text);
        assert_eq!((stat.inuse, stat.orphan, stat.time_wait), (5, 2, 7));
    }
}
