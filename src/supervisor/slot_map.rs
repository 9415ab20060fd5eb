//! The supervisor's side tables, keyed by slot index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by slot index: the tasks, spans, lingering closes and `CLOSE_WAIT` stamps
/// the supervisor keeps for some connections.
pub(super) type SlotMap<V> = HashMap<u32, V, BuildHasherDefault<SlotHasher>>;

/// Hashes a slot index with one multiplication (Fibonacci hashing, as rustc's `FxHasher`
/// does). Slot indices are the library's own, handed out densely from a free list, so they
/// need no defence against chosen keys; SipHash, the default, cost about 110 instructions
/// per insert or removal, twice per connection under a serve.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SlotHasher(u64);

/// 2^64 / φ, odd: the low bits of a product depend only on the key's low bits, one to one,
/// so consecutive slots land in distinct buckets; the high bits (the table's tags) mix all.
const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_slots_land_in_distinct_buckets_and_spread_their_tags() {
        let build = BuildHasherDefault::<SlotHasher>::default();
        let hashes: Vec<u64> = (0..1024_u32).map(|i| build.hash_one(i)).collect();
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(buckets.len(), 1024, "two slots of 1024 share a bucket");
        // hashbrown's tag is the top 7 bits: all 128 values should appear.
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128, "only {} of 128 tags used", tags.len());
    }

    #[test]
    fn a_slot_map_keeps_every_entry() {
        let mut map = SlotMap::default();
        for i in 0..10_000_u32 {
            map.insert(i * 7, i);
        }
        for i in (0..10_000_u32).step_by(2) {
            assert_eq!(map.remove(&(i * 7)), Some(i));
        }
        assert_eq!(map.len(), 5_000);
        assert!((1..10_000_u32)
            .step_by(2)
            .all(|i| map.get(&(i * 7)) == Some(&i)));
    }
}
