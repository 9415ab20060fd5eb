//! The connection's state word: its flags, why the library closed it, and the errnos
//! that explain its end, packed into one atomic word (`sys::SocketCell`'s user bits) so
//! that every change is one atomic operation.

use std::fmt;
use std::ops::BitOr;

use crate::state::{CloseReason, ConnectionState};

/// The state bits of a connection (bits 0..=7 of the word).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(u8);

impl Flags {
    pub(crate) const NONE: Flags = Flags(0);
    /// The peer's FIN arrived (seen by the kernel watcher or as EOF on read).
    pub(crate) const PEER_FIN: Flags = Flags(1);
    /// We shut down our write half (the application, or the library for it).
    pub(crate) const LOCAL_FIN: Flags = Flags(2);
    /// The library closed the connection, or the kernel ended it (reset, timeout).
    pub(crate) const CLOSED: Flags = Flags(4);
    /// The library closed the connection gracefully: our FIN follows every queued byte,
    /// its writes fail, and its reads end at EOF (woken if parked); if the peer had sent
    /// FIN first, what it sent before that is still read, then EOF.
    pub(crate) const SHUT: Flags = Flags(8);
    /// The application's own read returned EOF: nothing is left unread.
    pub(crate) const READ_EOF: Flags = Flags(16);
    /// The application has dropped the stream (or taken the tokio stream back).
    pub(crate) const RELEASED: Flags = Flags(32);
    /// The supervisor wants to hear of the next write: a rule that runs while data is
    /// queued (`write_idle_timeout`, `min_send_rate`) found nothing queued at its last
    /// look, so it stopped looking. Only asked for when a slot is occupied: the slot
    /// keeps it beside its write mark, not in the word, so that a write tests both with
    /// one load (see `Slot::add_written`).
    pub(crate) const WATCH_WRITES: Flags = Flags(64);
    /// The supervisor wants to hear when the peer starts owing data: `min_receive_rate`
    /// is on and the peer owed nothing at its last look.
    pub(crate) const WATCH_READS: Flags = Flags(128);

    pub(crate) const fn bits(self) -> u8 {
        self.0
    }

    pub(crate) const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set.
    pub(crate) const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub(crate) const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// The client is gone for the application's purposes: it sent FIN, the connection
    /// ended, or the stream was dropped. A handler may stop working for it.
    pub(crate) const fn peer_gone(self) -> bool {
        self.intersects(Flags(Self::PEER_FIN.0 | Self::CLOSED.0 | Self::RELEASED.0))
    }

    /// The state as the API reports it.
    pub(crate) fn state(self) -> ConnectionState {
        let peer = self.contains(Self::PEER_FIN);
        let local = self.contains(Self::LOCAL_FIN);
        if self.contains(Self::CLOSED) || (peer && local) {
            ConnectionState::Closed
        } else if peer {
            ConnectionState::PeerClosed
        } else if local {
            ConnectionState::LocallyClosed
        } else {
            ConnectionState::Open
        }
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#04x})", self.0)
    }
}

/// How the rest of the word is laid out around the flags: bits 8..=12 the close reason,
/// 13 [`RECEIVED`], 14 [`OWED`], 15..=21 the kernel's errno, 22..=28 the application's
/// errno, 29..=31 the cell's locks (`sys::SocketCell`). Bit 6 ([`Flags::WATCH_WRITES`])
/// stays clear: the slot keeps that one beside its write mark.
pub(crate) mod word {
    use super::{CloseReason, Flags};

    const REASON_SHIFT: u32 = 8;
    const REASON_MASK: u32 = 0x1F << REASON_SHIFT;
    const ERRNO_MASK: u32 = 0x7F;
    const KERNEL_ERRNO_SHIFT: u32 = 15;
    const APP_ERRNO_SHIFT: u32 = 22;

    /// A framework serve says the request in flight is fully received: until the next
    /// request, the peer owes nothing, whatever the stream's marks say (the handler is
    /// computing, or has not read a body that arrived whole).
    pub(crate) const RECEIVED: u32 = 1 << 13;
    /// A framework serve says a handler waits for more of a request body: the peer owes
    /// data, whatever the stream's marks say.
    pub(crate) const OWED: u32 = 1 << 14;

    pub(crate) fn flags(word: u32) -> Flags {
        Flags::from_bits(word as u8)
    }

    pub(crate) fn reason(word: u32) -> Option<CloseReason> {
        match (word & REASON_MASK) >> REASON_SHIFT {
            0 => None,
            n => CloseReason::from_index(n as usize - 1),
        }
    }

    pub(crate) fn with_reason(word: u32, reason: CloseReason) -> u32 {
        (word & !REASON_MASK) | ((reason.index() as u32 + 1) << REASON_SHIFT)
    }

    /// Claims `reason` as the one the connection closed for and sets `flags`, unless it
    /// has a reason already: the first reason wins, and is counted once.
    pub(crate) fn claim(word: u32, why: CloseReason, flags: Flags) -> Option<u32> {
        reason(word)
            .is_none()
            .then(|| with_reason(word, why) | u32::from(flags.bits()))
    }

    /// An errno as it fits its 7 bits of the word; larger ones (none that TCP reports on
    /// the systems this runs on) are not kept.
    fn errno_bits(errno: i32) -> Option<u32> {
        u32::try_from(errno)
            .ok()
            .filter(|b| *b != 0 && *b <= ERRNO_MASK)
    }

    fn errno_at(word: u32, shift: u32) -> Option<i32> {
        match (word >> shift) & ERRNO_MASK {
            0 => None,
            n => Some(n as i32),
        }
    }

    pub(crate) fn kernel_errno(word: u32) -> Option<i32> {
        errno_at(word, KERNEL_ERRNO_SHIFT)
    }

    pub(crate) fn app_errno(word: u32) -> Option<i32> {
        errno_at(word, APP_ERRNO_SHIFT)
    }

    /// Records `errno` as the kernel's, unless one is recorded already.
    pub(crate) fn with_kernel_errno(word: u32, errno: i32) -> Option<u32> {
        let bits = errno_bits(errno)?;
        kernel_errno(word)
            .is_none()
            .then_some(word | (bits << KERNEL_ERRNO_SHIFT))
    }

    /// Records `errno` as the application's, unless one is recorded already.
    pub(crate) fn with_app_errno(word: u32, errno: i32) -> Option<u32> {
        let bits = errno_bits(errno)?;
        app_errno(word)
            .is_none()
            .then_some(word | (bits << APP_ERRNO_SHIFT))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fields_do_not_overlap_the_cells_locks() {
            let w = with_reason(0, CloseReason::Drained);
            let w = with_kernel_errno(w, 110).unwrap();
            let w = with_app_errno(w, 104).unwrap();
            let w = w | 0xFF | RECEIVED | OWED;
            assert_eq!(w & !crate::sys::USER_BITS, 0);
            assert_eq!(reason(w), Some(CloseReason::Drained));
            assert_eq!(kernel_errno(w), Some(110));
            assert_eq!(app_errno(w), Some(104));
            assert_eq!(flags(w).bits(), 0xFF);
            assert_eq!(with_kernel_errno(w, 5), None, "the first errno stays");
            // Every errno TCP reports fits.
            for errno in [
                libc::ECONNRESET,
                libc::ETIMEDOUT,
                libc::EHOSTUNREACH,
                libc::EPIPE,
            ] {
                assert_eq!(
                    kernel_errno(with_kernel_errno(0, errno).unwrap()),
                    Some(errno)
                );
            }
            for reason in CloseReason::ALL {
                assert_eq!(super::reason(with_reason(0, reason)), Some(reason));
                let claimed = claim(0, reason, Flags::CLOSED).unwrap();
                assert_eq!(super::reason(claimed), Some(reason));
                assert_eq!(claim(claimed, CloseReason::Drained, Flags::SHUT), None);
            }
            // Room for 31 reasons.
            assert!(CloseReason::ALL.len() < 32);
        }
    }
}
