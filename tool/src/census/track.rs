//! Following sockets by their cookie from one census to the next, so that an age the
//! kernel only bounds from below grows with the time the socket has been seen in its
//! state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tcp_hygiene::KernelState;

use super::socket::SocketRecord;

/// Remembers, for each socket it has seen (by sock_diag's socket cookie, which no later
/// socket reuses), the state it was in and the earliest time it can have entered it.
/// Passed to [`CensusQuery::run_tracked`](crate::CensusQuery::run_tracked) and
/// [`reap_tracked`](crate::reap_tracked) again and again, it dates each socket by the
/// longer of what the kernel says now and how long it has been seen in its state since:
///
/// - a `CLOSE_WAIT` socket whose `tcpi_last_ack_recv` a keepalive reply resets (Go's 15 s
///   keepalive) keeps the age it had when first seen, plus the time since;
/// - a `FIN_WAIT_1` socket behind a zero window, which the kernel does not date, is at
///   least as old as the time since it was first seen in `FIN_WAIT_1`.
///
/// Such an age stays a lower bound (the socket may have been in its state before the
/// first census that saw it) unless the kernel dated it exactly. Sockets from
/// `/proc/net/tcp` have no cookie and are not followed, nor are sockets in states the
/// kernel dates exactly or that have no age to speak of (`ESTABLISHED`, `TIME_WAIT`,
/// `LISTEN`, handshakes). A socket not seen in a census is forgotten, so the tracker
/// holds at most the closing sockets of the last census (about 50 bytes each).
#[derive(Debug, Default)]
pub struct AgeTracker {
    seen: HashMap<[u8; 8], Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    state: KernelState,
    /// The earliest it can have entered `state`.
    entered: Instant,
    /// Whether `entered` is only a bound (the socket may have entered earlier).
    lower_bound: bool,
}

impl AgeTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sockets followed now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it follows no socket.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Dates `sockets`, read at `now`, by what was seen of them before, and remembers
    /// them (only them) for the next census.
    pub(crate) fn refine(&mut self, sockets: &mut [SocketRecord], now: Instant) {
        let mut seen = HashMap::with_capacity(sockets.len());
        for socket in sockets.iter_mut() {
            let Some(cookie) = socket.cookie else {
                continue;
            };
            // Only the states whose age the kernel may not tell, or only bound: the bulk
            // of a busy host (ESTABLISHED, TIME_WAIT, LISTEN) costs nothing here.
            if !matches!(
                socket.state,
                KernelState::CloseWait
                    | KernelState::FinWait1
                    | KernelState::FinWait2
                    | KernelState::LastAck
                    | KernelState::Closing
            ) {
                continue;
            }
            // What the kernel says now; a socket it does not date is at least as old as
            // this sighting.
            let mut here = match socket.lingered {
                Some(age) => Seen {
                    state: socket.state,
                    entered: now.checked_sub(age).unwrap_or(now),
                    lower_bound: socket.lower_bound,
                },
                None => Seen {
                    state: socket.state,
                    entered: now,
                    lower_bound: true,
                },
            };
            if let Some(before) = self.seen.get(&cookie).filter(|b| b.state == socket.state) {
                // The earlier of the two; an exact date wins a tie within a millisecond.
                let earlier = before.entered + Duration::from_millis(1) < here.entered
                    || (before.entered <= here.entered + Duration::from_millis(1)
                        && !before.lower_bound
                        && here.lower_bound);
                if earlier {
                    here = *before;
                }
                socket.lingered = Some(now.saturating_duration_since(here.entered));
                socket.lower_bound = here.lower_bound;
            }
            seen.insert(cookie, here);
        }
        self.seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelState::*;

    fn record(
        cookie: u8,
        state: KernelState,
        age_ms: Option<u64>,
        lower_bound: bool,
    ) -> SocketRecord {
        SocketRecord {
            state,
            local: "127.0.0.1:8080".parse().unwrap(),
            peer: "127.0.0.1:50000".parse().unwrap(),
            inode: 1,
            recv_queue: 0,
            backlog: None,
            lingered: age_ms.map(Duration::from_millis),
            lower_bound,
            upper_bound: None,
            cookie: Some([cookie; 8]),
            interface: 0,
        }
    }

    #[test]
    fn an_age_reset_by_keepalive_keeps_growing() {
        let mut tracker = AgeTracker::new();
        let t0 = Instant::now();
        let mut first = [record(1, CloseWait, Some(3_000), true)];
        tracker.refine(&mut first, t0);
        assert_eq!(first[0].lingered, Some(Duration::from_secs(3)));
        // 14 s later a keepalive reply made the kernel's figure 1.8 s.
        let mut later = [record(1, CloseWait, Some(1_800), true)];
        tracker.refine(&mut later, t0 + Duration::from_secs(14));
        assert_eq!(later[0].lingered, Some(Duration::from_secs(17)));
        assert!(later[0].lower_bound);
    }

    #[test]
    fn an_undated_socket_is_as_old_as_its_first_sighting() {
        let mut tracker = AgeTracker::new();
        let t0 = Instant::now();
        let mut first = [
            record(2, FinWait1, Some(0), true),
            record(3, Closing, None, false),
        ];
        tracker.refine(&mut first, t0);
        let mut later = [
            record(2, FinWait1, Some(0), true),
            record(3, Closing, None, false),
        ];
        tracker.refine(&mut later, t0 + Duration::from_secs(5));
        for socket in &later {
            assert_eq!(socket.lingered, Some(Duration::from_secs(5)), "{socket:?}");
            assert!(socket.lower_bound);
        }
        assert_eq!(tracker.len(), 2);
    }

    #[test]
    fn a_new_state_or_an_exact_date_starts_over() {
        let mut tracker = AgeTracker::new();
        let t0 = Instant::now();
        tracker.refine(&mut [record(4, CloseWait, Some(9_000), false)], t0);
        // It moved on to LAST_ACK: dated from scratch.
        let mut moved = [record(4, LastAck, Some(0), true)];
        tracker.refine(&mut moved, t0 + Duration::from_secs(1));
        assert_eq!(moved[0].lingered, Some(Duration::ZERO));
        // A kernel date younger than what was seen does not undo the sighting.
        let mut dated = [record(4, LastAck, Some(800), false)];
        tracker.refine(&mut dated, t0 + Duration::from_secs(2));
        assert_eq!(dated[0].lingered, Some(Duration::from_secs(1)));
        // Gone from a census: forgotten.
        tracker.refine(&mut [], t0 + Duration::from_secs(3));
        assert!(tracker.is_empty());
    }
}
