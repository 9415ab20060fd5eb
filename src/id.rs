//! Which connection: its slot in the listener's table and the slot's generation.

use std::fmt;

/// A connection's identity, unique within its listener: the slot it occupies in the
/// listener's table and that slot's generation (bumped each time the slot is reused), so
/// that an id never names a later connection in the same slot.
///
/// It converts to and from a `u64` (generation in the high 32 bits, slot in the low 32),
/// which is how it prints, serializes and appears in logs.
///
/// # Examples
///
/// ```
/// use tcp_hygiene::ConnectionId;
///
/// let id = ConnectionId::from(0x0000_0002_0000_0007_u64);
/// assert_eq!(id.slot(), 7);
/// assert_eq!(id.generation(), 2);
/// assert_eq!(u64::from(id), 0x0000_0002_0000_0007);
/// assert_eq!(id.to_string(), "8589934599");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    slot: u32,
    generation: u32,
}

impl ConnectionId {
    pub(crate) const fn new(slot: u32, generation: u32) -> Self {
        Self { slot, generation }
    }

    /// The slot in the listener's table.
    pub const fn slot(self) -> u32 {
        self.slot
    }

    /// The slot's generation when the connection was accepted.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The id as one number: generation in the high 32 bits, slot in the low 32.
    pub const fn as_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.slot as u64
    }
}

impl From<ConnectionId> for u64 {
    fn from(id: ConnectionId) -> u64 {
        id.as_u64()
    }
}

impl From<u64> for ConnectionId {
    fn from(id: u64) -> Self {
        Self::new(id as u32, (id >> 32) as u32)
    }
}

impl PartialEq<u64> for ConnectionId {
    fn eq(&self, other: &u64) -> bool {
        self.as_u64() == *other
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_u64(), f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_u64() {
        for (slot, generation) in [(0, 0), (7, 2), (u32::MAX, u32::MAX), (1, 0)] {
            let id = ConnectionId::new(slot, generation);
            assert_eq!(ConnectionId::from(u64::from(id)), id);
            assert_eq!(id, u64::from(id));
        }
    }
}
