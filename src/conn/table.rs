//! The listener's table of connections: fixed slots in pages, reused through a free
//! list, so that a connection costs one slot (80 bytes) and no allocation of its own (a
//! peer with an IPv6 address, other than an IPv4-mapped one, also a 28-byte box).
//!
//! A slot is addressed by its index (and, in everything the supervisor keeps for later,
//! by its generation too). It is counted: the stream, the supervisor and every
//! [`ConnectionHandle`](crate::ConnectionHandle) hold a reference, and the last to let go
//! puts it back on the free list with a new generation. A page keeps the listener's
//! shared state alive, so a stream or a handle does too; the pages themselves belong to
//! the table until the supervisor ends and clears it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::flags::{word, Flags};
use super::refs::Refs;
use crate::id::ConnectionId;
use crate::shared::Shared;
use crate::sys::SocketCell;
use crate::time::Stamps;

/// Slots per page: a page is one allocation of about 20 KiB.
pub(crate) const PAGE: usize = 256;

// A slot's place in its page fits its `offset`.
const _: () = assert!(PAGE <= 1 << u8::BITS);

/// One connection's shared state.
pub(crate) struct Slot {
    /// Written only by the stream's `poll_read` (one writer), read by anyone.
    pub(super) bytes_read: AtomicU64,
    /// Written only by the stream's `poll_write` (one writer), read by anyone.
    pub(super) bytes_written: AtomicU64,
    /// When it was accepted: nanoseconds since the table's epoch.
    pub(super) accepted_ns: AtomicU64,
    /// The peer's address (see [`Peer`]): an IPv4 address and port in the word itself,
    /// an IPv6 one boxed.
    peer: AtomicU64,
    /// The state word, the descriptor and the parked reader's waker.
    pub(super) cell: SocketCell,
    /// References held (the stream, the supervisor until it has handled the release, and
    /// each handle) and the generation, bumped each time the slot is freed: with the
    /// index, the connection's identity.
    pub(super) refs: Refs,
    /// Low 32 bits of `bytes_read` when a read last returned `Pending`.
    pub(super) read_parked_at: AtomicU32,
    /// `bytes_read` at the last write (bits 0..=62), and
    /// [`WATCH_WRITES`](Self::WATCH_WRITES): one load and one comparison with `bytes_read`
    /// tell a write whether it has anything to note.
    pub(super) write_mark: AtomicU64,
    /// A framework serve holds response data the peer has not made room for (an HTTP/2
    /// stream whose window is shut): queued, though not in the kernel.
    pub(super) user_queued: AtomicBool,
    /// Which slot of its page this is: how a [`Conn`](super::Conn), which keeps only the
    /// slot's address, finds the page. Set when the page is made.
    offset: u8,
}

impl Slot {
    /// The write mark's bit that says the supervisor wants to hear of the next write (see
    /// [`Flags::WATCH_WRITES`]).
    /// (`bytes_read` stays below it: 2^63 bytes.)
    pub(super) const WATCH_WRITES: u64 = 1 << 63;

    /// `bytes_read` at the last write.
    pub(super) fn read_at_last_write(&self) -> u64 {
        self.write_mark.load(Relaxed) & !Self::WATCH_WRITES
    }

    /// Counts `n` bytes read. Single writer (the stream): a load and a store, no
    /// read-modify-write instruction.
    #[inline]
    pub(super) fn add_read(&self, n: usize) {
        self.bytes_read.store(
            self.bytes_read.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
    }

    /// Counts `n` bytes written (single writer, the stream); whether the write has
    /// something to note ([`note_write`](Self::note_write)): it is the first after a
    /// read that returned data, or the supervisor asked to hear of it. One load and one
    /// comparison decide both.
    ///
    /// Only the stream calls it, through `&mut` (as it does [`add_read`](Self::add_read)).
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn add_written(&self, n: usize) -> bool {
        self.bytes_written.store(
            self.bytes_written.load(Relaxed).wrapping_add(n as u64),
            Relaxed,
        );
        // SAFETY: `bytes_read` has one writer, the stream's reads (and `occupy`, before
        // the slot is handed out), and the stream's writes and reads are serialised by
        // its `&mut self`: no write to it can run concurrently with this read, so a plain
        // read is no data race. Plain, the compiler folds it into the comparison.
        let read = unsafe { *self.bytes_read.as_ptr() };
        read != self.write_mark.load(Relaxed)
    }

    /// Notes a write: the read count it follows, and clears `WATCH_WRITES`; returns
    /// whether that was set (the supervisor must hear of it).
    pub(super) fn note_write(&self) -> bool {
        let old = self.write_mark.swap(self.bytes_read.load(Relaxed), AcqRel);
        old & Self::WATCH_WRITES != 0
    }

    /// Clears `WATCH_WRITES` without a write; returns whether it was set.
    #[cfg(feature = "hyper")]
    pub(super) fn unwatch_writes(&self) -> bool {
        self.write_mark.load(Relaxed) & Self::WATCH_WRITES != 0
            && self.write_mark.fetch_and(!Self::WATCH_WRITES, AcqRel) & Self::WATCH_WRITES != 0
    }

    /// The state word's flags.
    #[inline]
    pub(super) fn flags(&self) -> Flags {
        word::flags(self.cell.load())
    }

    /// Whether a watch asked for is still set (no write since).
    pub(super) fn watches_writes(&self) -> bool {
        self.write_mark.load(Acquire) & Self::WATCH_WRITES != 0
    }

    /// Asks to hear of the next write.
    pub(super) fn watch_writes(&self) {
        self.write_mark.fetch_or(Self::WATCH_WRITES, AcqRel);
    }

    fn new(offset: u8) -> Self {
        Self {
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            accepted_ns: AtomicU64::new(0),
            peer: AtomicU64::new(Peer::NONE),
            cell: SocketCell::new(),
            refs: Refs::new(),
            read_parked_at: AtomicU32::new(u32::MAX),
            write_mark: AtomicU64::new(0),
            user_queued: AtomicBool::new(false),
            offset,
        }
    }

    /// Which slot of its page this is.
    #[inline]
    pub(super) fn offset(&self) -> u8 {
        self.offset
    }

    /// Makes a free slot the new connection's. Nobody else can reach a free slot (its
    /// count is 0, and `Refs::acquire` counts only an occupied one), so plain stores do;
    /// the count, stored last with `Release`, publishes them all, the peer's box included,
    /// to whoever acquires it (`Table::held`, `Table::find`).
    fn occupy(&self, fd: RawFd, peer: SocketAddr, accepted_ns: u64, flags: Flags) {
        self.bytes_read.store(0, Relaxed);
        self.bytes_written.store(0, Relaxed);
        self.read_parked_at.store(u32::MAX, Relaxed);
        // The supervisor may ask to hear of the first write; the word does not keep it.
        let watch = match flags.contains(Flags::WATCH_WRITES) {
            true => Self::WATCH_WRITES,
            false => 0,
        };
        self.write_mark.store(watch, Relaxed);
        let flags = Flags::from_bits(flags.bits() & !Flags::WATCH_WRITES.bits());
        self.accepted_ns.store(accepted_ns, Relaxed);
        // The previous occupant's box, if any, goes: nobody holds a reference to a free
        // slot, so nobody reads it.
        Peer::free(self.peer.swap(Peer::encode(peer), Relaxed));
        self.user_queued.store(false, Relaxed);
        self.cell.reset(fd, u32::from(flags.bits()));
        // Last: the stream and the supervisor.
        self.refs.occupy(2);
    }

    /// The peer's address as `accept` returned it. (A serve asks for it with every
    /// request: an IPv4 peer's is decoded from one load.)
    pub(super) fn peer(&self) -> SocketAddr {
        Peer::decode(self.peer.load(Relaxed))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        Peer::free(*self.peer.get_mut());
    }
}

/// How a slot keeps its peer's address in one word: an IPv4 address and port in the word
/// (bit 0 set; bit 1 too for an IPv4-mapped IPv6 address without flow information or
/// scope, how a dual-stack listener sees an IPv4 client), or else the address of a boxed
/// `SocketAddrV6` (28 bytes; 4-aligned, so bit 0 is clear), freed when the slot is next
/// occupied or dropped. IPv4 clients cost the slot 8 bytes instead of the 19 that separate
/// fields for an IPv6-sized address took.
///
/// The box's address goes through an integer (`as` casts, exposed provenance: the strict
/// provenance API needs Rust 1.84).
struct Peer;

impl Peer {
    /// No peer: a slot never occupied. Decodes as `0.0.0.0:0`.
    const NONE: u64 = 1;
    const INLINE: u64 = 1;
    const MAPPED: u64 = 2;

    fn encode(peer: SocketAddr) -> u64 {
        let inline = |ip: Ipv4Addr, port: u16| {
            (u64::from(u32::from(ip)) << 32) | (u64::from(port) << 16) | Self::INLINE
        };
        match peer {
            SocketAddr::V4(v4) => inline(*v4.ip(), v4.port()),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(ip) if v6.flowinfo() == 0 && v6.scope_id() == 0 => {
                    inline(ip, v6.port()) | Self::MAPPED
                }
                _ => Box::into_raw(Box::new(v6)) as usize as u64,
            },
        }
    }

    #[allow(unsafe_code)]
    fn decode(word: u64) -> SocketAddr {
        if word & Self::INLINE != 0 {
            let ip = Ipv4Addr::from((word >> 32) as u32);
            let port = (word >> 16) as u16;
            if word & Self::MAPPED != 0 {
                return SocketAddr::V6(SocketAddrV6::new(ip.to_ipv6_mapped(), port, 0, 0));
            }
            return SocketAddr::V4(SocketAddrV4::new(ip, port));
        }
        // SAFETY: a word with bit 0 clear is a box `encode` made. It lives until the slot
        // is occupied again or dropped; a reader holds a counted reference to the slot,
        // and `occupy` runs only on a slot nobody holds and publishes the new word before
        // the count that lets anyone reach it (see `Slot::occupy`).
        SocketAddr::V6(unsafe { *(word as usize as *const SocketAddrV6) })
    }

    /// Frees `word`'s box, if it has one. Only for a word no one can read any more.
    #[allow(unsafe_code)]
    fn free(word: u64) {
        if word & Self::INLINE == 0 {
            // SAFETY: made by `Box::into_raw` in `encode`, and no longer reachable.
            drop(unsafe { Box::from_raw(word as usize as *mut SocketAddrV6) });
        }
    }
}

/// `repr(C)`, slots first: a slot's address less its offset times the slot's size is the
/// page's (see [`Conn`](super::Conn)).
#[repr(C)]
pub(crate) struct Page {
    pub(super) slots: [Slot; PAGE],
    pub(super) shared: Arc<Shared>,
    /// The index of its first slot.
    pub(super) base: u32,
}

impl Page {
    /// The generation of slot `index` (of this page), read without a [`Conn`](super::Conn)
    /// and so without touching the page's count: the supervisor asks it of every message.
    pub(crate) fn generation(&self, index: u32) -> u32 {
        self.slots[index as usize % PAGE].refs.generation()
    }

    /// Whether the application released slot `index` (see `Conn::is_released`), read the
    /// same way.
    pub(crate) fn is_released(&self, index: u32) -> bool {
        self.slots[index as usize % PAGE]
            .flags()
            .contains(Flags::RELEASED)
    }
}

/// The slots of one listener.
pub(crate) struct Table {
    /// The rules' clock: nanoseconds since the table was made.
    stamps: Stamps,
    pages: Mutex<Vec<Arc<Page>>>,
    free: Mutex<Vec<u32>>,
    /// The supervisor is gone and has let go of the pages: no slot is handed out again.
    closed: AtomicBool,
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            stamps: Stamps::new(),
            pages: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since the table's epoch: how slots keep instants.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        self.stamps.stamp(at)
    }

    /// Now, on the table's clock: [`nanos`](Self::nanos)`(Instant::now())`, read for less.
    pub(crate) fn now_ns(&self) -> u64 {
        self.stamps.now()
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.stamps.instant(nanos)
    }

    /// A slot for a new connection, starting with `flags`: the page that holds it, and
    /// its index; `None` once the supervisor is gone.
    pub(crate) fn occupy(
        &self,
        shared: &Arc<Shared>,
        fd: RawFd,
        peer: SocketAddr,
        flags: Flags,
    ) -> Option<(Arc<Page>, u32)> {
        if self.closed.load(Relaxed) {
            return None;
        }
        let accepted = self.now_ns();
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let index = index.unwrap_or_else(|| self.grow(shared));
        let page = self.page(index)?;
        page.slots[index as usize % PAGE].occupy(fd, peer, accepted, flags);
        Some((page, index))
    }

    /// Adds a page; returns one of its slots and puts the others on the free list.
    fn grow(&self, shared: &Arc<Shared>) -> u32 {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let base = (pages.len() * PAGE) as u32;
        pages.push(Arc::new(Page {
            shared: shared.clone(),
            base,
            slots: std::array::from_fn(|i| Slot::new(i as u8)),
        }));
        drop(pages);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend((base + 1..base + PAGE as u32).rev());
        base
    }

    /// The page of slot `index`.
    pub(crate) fn page(&self, index: u32) -> Option<Arc<Page>> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages.get(index as usize / PAGE).cloned()
    }

    /// Every occupied slot whose stream is still held, each with a reference counted for
    /// the caller (to adopt).
    pub(crate) fn held(&self) -> Vec<(Arc<Page>, u32)> {
        let pages = self.pages();
        let mut held = Vec::new();
        for (p, page) in pages.iter().enumerate() {
            for (i, slot) in page.slots.iter().enumerate() {
                let index = (p * PAGE + i) as u32;
                if self.acquire_held(slot, index) {
                    held.push((page.clone(), index));
                }
            }
        }
        held
    }

    /// The slot of connection `id` (generation and index), if its stream is still held,
    /// with a reference counted for the caller (to adopt).
    pub(crate) fn find(&self, id: ConnectionId) -> Option<(Arc<Page>, u32)> {
        let (index, gen) = (id.slot(), id.generation());
        let page = self.page(index)?;
        let slot = &page.slots[index as usize % PAGE];
        if !self.acquire_held(slot, index) {
            return None;
        }
        if slot.refs.generation() != gen {
            self.unref(slot, index); // another connection's now
            return None;
        }
        Some((page, index))
    }

    /// Counts a reference to `slot` if it is occupied and its stream still held.
    fn acquire_held(&self, slot: &Slot, index: u32) -> bool {
        if !slot.refs.acquire() {
            return false;
        }
        if word::flags(slot.cell.load()).contains(Flags::RELEASED) {
            self.unref(slot, index);
            return false;
        }
        true
    }

    /// Lets go of a reference to `slot`; the last one frees it.
    pub(super) fn unref(&self, slot: &Slot, index: u32) {
        if slot.refs.release() {
            self.vacate(index);
        }
    }

    /// Every page, for the supervisor's own list.
    pub(crate) fn pages(&self) -> Vec<Arc<Page>> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last reference to slot `index` is gone: a new generation, and back to the
    /// free list.
    fn vacate(&self, index: u32) {
        if self.closed.load(Relaxed) {
            return; // its page is no longer the table's
        }
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(index);
    }

    /// Drops the table's pages: the supervisor is done, and the pages' references to the
    /// shared state must not keep it alive any longer.
    pub(crate) fn clear(&self) {
        self.closed.store(true, Relaxed);
        let pages = std::mem::take(&mut *self.pages.lock().unwrap_or_else(|e| e.into_inner()));
        drop(pages);
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pages = self.pages.lock().map_or(0, |p| p.len());
        f.debug_struct("Table").field("pages", &pages).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 80);
    }

    /// One comparison per write tells the two things a write may have to note apart
    /// from nothing: the first write after a read, and a watch the supervisor set.
    #[test]
    fn a_write_notes_a_read_before_it_and_a_watch_once() {
        let slot = Slot::new(0);
        slot.occupy(-1, "192.0.2.7:1".parse().unwrap(), 0, Flags::NONE);
        assert!(!slot.add_written(10), "nothing read, nothing watched");
        slot.add_read(5);
        assert!(slot.add_written(10), "the first write after a read");
        assert!(!slot.note_write(), "no watch");
        assert_eq!(slot.read_at_last_write(), 5);
        assert!(!slot.add_written(10), "noted already");
        slot.watch_writes();
        assert_eq!(slot.read_at_last_write(), 5, "a watch keeps the mark");
        assert!(slot.add_written(1));
        assert!(slot.note_write(), "the watch is reported");
        assert!(!slot.add_written(1), "once");
        assert_eq!(slot.bytes_written.load(Relaxed), 32);
        // A watch asked for when the slot is occupied, and kept out of the word.
        slot.occupy(-1, "192.0.2.7:1".parse().unwrap(), 0, Flags::WATCH_WRITES);
        assert!(!word::flags(slot.cell.load()).contains(Flags::WATCH_WRITES));
        assert!(slot.add_written(1) && slot.note_write());
        // The whole count compares: a read of exactly 2^32 bytes is noted too.
        slot.add_read(1 << 32);
        assert!(slot.add_written(1) && !slot.note_write());
        assert_eq!(slot.read_at_last_write(), 1 << 32);
        assert!(!slot.add_written(1));
    }

    #[test]
    fn peer_addresses_read_back_as_accepted() {
        let slot = Slot::new(0);
        for peer in [
            "192.0.2.7:4321",
            "[2001:db8::1]:80",
            "[::ffff:192.0.2.7]:1",
            "[::ffff:192.0.2.7%3]:1",
            "[fe80::1%7]:443",
            "[::]:0",
            "0.0.0.0:0",
            "255.255.255.255:65535",
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            slot.occupy(-1, peer, 0, Flags::NONE);
            assert_eq!(slot.peer(), peer);
        }
        // A flow label is kept too, in the box.
        let mapped = "::ffff:192.0.2.7".parse().unwrap();
        let labelled = SocketAddr::V6(SocketAddrV6::new(mapped, 9, 5, 0));
        slot.occupy(-1, labelled, 0, Flags::NONE);
        assert_eq!(slot.peer(), labelled);
    }

    /// IPv4 clients, of an IPv4 listener or a dual-stack one, cost no box.
    #[test]
    fn ipv4_peers_are_kept_in_the_word() {
        let slot = Slot::new(0);
        for (peer, inline) in [
            ("192.0.2.7:4321", true),
            ("[::ffff:192.0.2.7]:1", true),
            ("[::ffff:192.0.2.7%3]:1", false),
            ("[2001:db8::1]:80", false),
        ] {
            slot.occupy(-1, peer.parse().unwrap(), 0, Flags::NONE);
            let word = slot.peer.load(Relaxed);
            assert_eq!(word & Peer::INLINE != 0, inline, "{peer}");
        }
    }
}
