//! The host's own view of TCP sockets: counts by state for one local port, read from
//! `/proc/net/tcp` and `/proc/net/tcp6` (Linux), plus `/proc/net/sockstat`.
//!
//! This is what `ss -tan` shows, without running `ss`. It sees every socket on the
//! port, whichever process or library owns it, so it can tell a leak that tcp-hygiene
//! does not manage (a plain tokio listener) from one it does.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;

use crate::stats::KernelState;

/// Counts of TCP sockets by kernel state for one local port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    counts: BTreeMap<&'static str, u64>,
}

impl Census {
    /// Counts the sockets whose local port is `port` (IPv4 and IPv6), listening sockets
    /// excluded.
    ///
    /// # Errors
    ///
    /// If `/proc/net/tcp` cannot be read (not Linux, or no procfs).
    pub fn of_local_port(port: u16) -> io::Result<Self> {
        let mut census = Census::default();
        let mut read_any = false;
        for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = match fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if path.ends_with('6') && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            read_any = true;
            for line in text.lines().skip(1) {
                if let Some((local_port, state)) = parse_line(line) {
                    if local_port == port && state != KernelState::Listen {
                        *census.counts.entry(state.as_str()).or_insert(0) += 1;
                    }
                }
            }
        }
        if !read_any {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(census)
    }

    /// Sockets in `state`.
    pub fn count(&self, state: KernelState) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }

    /// All sockets counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// What each unusual state on this port says about who is at fault.
    pub fn diagnosis(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |state: KernelState, text: &str| {
            let n = self.count(state);
            if n > 0 {
                out.push(format!("{n} {state}: {text}"));
            }
        };
        say(KernelState::CloseWait, "the peer sent FIN and the local application has not closed its socket (a handler that hangs or forgets to drop)");
        say(
            KernelState::FinWait2,
            "we sent FIN and the peer application has not closed its side",
        );
        say(
            KernelState::FinWait1,
            "our FIN (or data) is not acknowledged: the peer is not reading, or is gone",
        );
        say(
            KernelState::LastAck,
            "we answered the peer's FIN and it does not acknowledge: the peer is gone",
        );
        say(
            KernelState::Closing,
            "both sides closed at once and an ACK was lost",
        );
        say(
            KernelState::TimeWait,
            "this side closed first; harmless unless counted in tens of thousands",
        );
        out
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.counts.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (state, n) in &self.counts {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{state}={n}")?;
        }
        Ok(())
    }
}

/// `sl local_address rem_address st ...`, with `local_address` as `HEXIP:HEXPORT`.
fn parse_line(line: &str) -> Option<(u16, KernelState)> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = fields.next()?;
    let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    let state = u8::from_str_radix(state, 16).ok()?;
    Some((port, KernelState::from_linux(state)))
}

/// Host-wide TCP totals from `/proc/net/sockstat`: sockets in use, orphans (closed by
/// their application, still in the kernel), and `TIME_WAIT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SockStat {
    /// TCP sockets in use.
    pub inuse: u64,
    /// Orphaned sockets: no descriptor, still in `FIN_WAIT_1`, `LAST_ACK`, …
    pub orphan: u64,
    /// Sockets in `TIME_WAIT`.
    pub time_wait: u64,
}

impl SockStat {
    /// Reads `/proc/net/sockstat` (of the current network namespace).
    ///
    /// # Errors
    ///
    /// If the file cannot be read (not Linux).
    pub fn read() -> io::Result<Self> {
        let text = fs::read_to_string("/proc/net/sockstat")?;
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
        Ok(stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_lines() {
        let line = "   3: 0100007F:1F90 0100007F:D2B4 08 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_line(line), Some((8080, KernelState::CloseWait)));
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_line(v6), Some((80, KernelState::Listen)));
        assert_eq!(parse_line("garbage"), None);
    }
}
