//! [`Conn`]: a connection's slot, reached in one load (the stream's hot path), and the page
//! that keeps it alive, found from the slot's address.

use std::ptr::NonNull;
use std::sync::Arc;

use super::table::{Page, Slot, PAGE};

/// A connection: the address of its slot, one word (a stream or a handle carries nothing
/// more). It holds a count on the slot's page, which keeps the slot (and the listener's
/// shared state) alive; the page is found from the slot's address and its place in the
/// page ([`Slot::offset`]), so nothing recomputes page + index × slot size on the hot path
/// and nothing stores the page beside the slot.
/// Not counted as a reference to the slot: the supervisor's own reference is counted
/// once, when the connection is registered; [`ConnRef`](super::ConnRef) is the counted
/// kind.
pub(crate) struct Conn {
    /// Points into the slots of a page whose `Arc` count this `Conn` holds one of.
    slot: NonNull<Slot>,
}

// SAFETY: a `Conn` is a count on an `Arc<Page>` (`Send + Sync`: a page is slots and an
// `Arc<Shared>`, all `Sync`) and a `&Slot` into that page, kept alive by the count; `Slot`
// is `Sync` (atomics and a `SocketCell`), so `&Slot` is `Send + Sync`.
unsafe impl Send for Conn {}
// SAFETY: as above.
unsafe impl Sync for Conn {}

impl Conn {
    /// Slot `index` of `page`, keeping the count `page` holds.
    pub(crate) fn new(page: Arc<Page>, index: u32) -> Self {
        let page = Arc::into_raw(page);
        // SAFETY: `page` comes from `Arc::into_raw`: valid until its count is given back,
        // which only `drop` does; the offset is within its slots. No reference is made on
        // the way, so the pointer keeps `into_raw`'s provenance over the whole page (and
        // the `Arc`'s counts before it), which `page_ptr` steps back into.
        let slot = unsafe {
            std::ptr::addr_of!((*page).slots)
                .cast::<Slot>()
                .add(index as usize % PAGE)
        };
        // SAFETY: derived from a non-null pointer by an in-bounds offset.
        Self {
            slot: unsafe { NonNull::new_unchecked(slot.cast_mut()) },
        }
    }

    /// The slot, without recomputing its address.
    #[inline]
    pub(super) fn slot(&self) -> &Slot {
        // SAFETY: `slot` points into the slots of a page that this `Conn`'s count keeps
        // alive for as long as `self` lives; a page's slots never move (they are part of
        // the `Arc`'s allocation) and are only ever shared (`&Slot`: every field is atomic,
        // immutable, or synchronised by `SocketCell`).
        unsafe { self.slot.as_ref() }
    }

    /// Which slot of its page this is.
    pub(super) fn offset(&self) -> u32 {
        u32::from(self.slot().offset())
    }

    /// The page's address: `Page` is `repr(C)` with its slots first, so the page begins
    /// `offset` slots before this one.
    fn page_ptr(&self) -> *const Page {
        // SAFETY: `offset` slots back is the page's first slot, in the same allocation.
        let first = unsafe { self.slot.as_ptr().sub(self.offset() as usize) };
        first.cast::<Page>()
    }

    /// The page: the listener's shared state.
    #[inline]
    pub(super) fn page(&self) -> &Page {
        // SAFETY: the page this `Conn` holds a count on (see `page_ptr`), alive while
        // `self` is.
        unsafe { &*self.page_ptr() }
    }
}

impl Clone for Conn {
    fn clone(&self) -> Self {
        // SAFETY: `page_ptr` is the pointer `Arc::into_raw` gave (the same address, and,
        // derived from it without a reference, the same provenance), and this `Conn`'s
        // count keeps it alive; the new `Conn` owns the count added here.
        unsafe { Arc::increment_strong_count(self.page_ptr()) };
        Self { slot: self.slot }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: gives back the count this `Conn` owns (taken by `new` or `clone`), on the
        // pointer `Arc::into_raw` gave (as in `clone`); `self.slot` is not used again.
        unsafe { Arc::decrement_strong_count(self.page_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conn_is_one_word() {
        assert_eq!(std::mem::size_of::<Conn>(), std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Option<Conn>>(),
            std::mem::size_of::<usize>()
        );
    }

    /// Every slot of every page finds its own page back from its address, and a `Conn`
    /// holds exactly one count on it from `new` or `clone` until it is dropped.
    #[test]
    fn a_conn_finds_its_page_and_holds_one_count_on_it() {
        let (tx, _rx) = crate::mailbox::channel();
        let config = crate::listener::Builder::new().build().expect("defaults");
        let shared = Arc::new(crate::shared::Shared::new(config, tx, "t"));
        let flags = super::super::flags::Flags::NONE;
        let peer = "192.0.2.1:9".parse().unwrap();
        let slots: Vec<_> = (0..2 * PAGE + 3)
            .map(|_| shared.table.occupy(&shared, -1, peer, flags).expect("open"))
            .collect();
        let pages = shared.table.pages();
        assert_eq!(pages.len(), 3);
        for (page, index) in slots {
            let before = Arc::strong_count(&page);
            let conn = Conn::new(page.clone(), index);
            assert!(std::ptr::eq(conn.page(), &*pages[index as usize / PAGE]));
            assert_eq!(conn.index(), index);
            assert_eq!(conn.offset() as usize, index as usize % PAGE);
            assert_eq!(Arc::strong_count(&page), before + 1);
            let twin = conn.clone();
            assert!(std::ptr::eq(twin.slot(), conn.slot()));
            assert_eq!(Arc::strong_count(&page), before + 2);
            drop((conn, twin));
            assert_eq!(Arc::strong_count(&page), before);
        }
        shared.table.clear();
    }
}
