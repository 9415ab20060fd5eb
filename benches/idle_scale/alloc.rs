//! A counting global allocator: live bytes and live allocations, by size class.
#![allow(unsafe_code)] // `GlobalAlloc` is an unsafe trait; every method forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

struct Counting;

pub(crate) static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
pub(crate) static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);
/// Live allocations by requested size, in 8-byte classes up to 4 KiB; the last class
/// holds the bytes (not the count) of everything larger.
static BY_SIZE: [AtomicIsize; SIZE_CLASSES + 1] = [const { AtomicIsize::new(0) }; SIZE_CLASSES + 1];
const SIZE_CLASSES: usize = 512;

fn track(size: usize, sign: isize) {
    LIVE_BYTES.fetch_add(sign * size as isize, Relaxed);
    LIVE_ALLOCS.fetch_add(sign, Relaxed);
    match size.div_ceil(8) {
        class @ 0..SIZE_CLASSES => BY_SIZE[class].fetch_add(sign, Relaxed),
        _ => BY_SIZE[SIZE_CLASSES].fetch_add(sign * size as isize, Relaxed),
    };
}

pub(crate) fn size_classes() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Relaxed)).collect()
}

/// The size classes that grew the most between two `size_classes()` snapshots, by bytes.
pub(crate) fn size_breakdown(before: &[isize], after: &[isize], n: usize) -> String {
    let mut grown: Vec<(isize, String)> = (0..SIZE_CLASSES)
        .filter_map(|c| {
            let d = after[c] - before[c];
            let bytes = d * (c as isize * 8);
            (bytes.unsigned_abs() >= n).then(|| {
                (
                    bytes,
                    format!("{:.2}×{}..{} B", d as f64 / n as f64, c * 8 - 7, c * 8),
                )
            })
        })
        .collect();
    let large = after[SIZE_CLASSES] - before[SIZE_CLASSES];
    if large.unsigned_abs() >= n {
        grown.push((
            large,
            format!("{:.0} B in >4 KiB blocks", large as f64 / n as f64),
        ));
    }
    grown.sort_by_key(|(bytes, _)| -bytes);
    grown
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(", ")
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        track(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(layout.size(), -1);
            track(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
