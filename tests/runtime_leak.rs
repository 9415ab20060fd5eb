//! What a listener leaves behind when its runtime goes away. A runtime shut down while a
//! listener (and so its supervisor task) is alive drops the supervisor's future wherever
//! it was: the heap it shared with the listener and its connections must be freed all
//! the same. Measured with a counting global allocator, so this file holds this test
//! alone (its own process: no other test's allocations in the count).
// A global allocator is an `unsafe` impl; the crate's lints deny `unsafe` elsewhere.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use tcp_hygiene::Builder;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One round: a runtime, a listener with one connection accepted, served and dropped;
/// then the runtime goes away, with the listener alive (`drop_listener_first`: false) or
/// after it was dropped and its supervisor had ended.
fn round(drop_listener_first: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(async {
        let listener = Builder::new().bind("127.0.0.1:0").await.unwrap();
        let (client, server) = support::connect_pair(&listener).await;
        drop(server);
        drop(client);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if drop_listener_first {
            drop(listener);
            // The supervisor ends once the listener and its last connection are gone.
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        } else {
            Some(listener)
        }
    });
    drop(runtime);
    drop(listener);
}

/// Bytes still live after `rounds` more rounds, once the first rounds have warmed up
/// whatever is allocated once per process.
fn growth(rounds: usize, drop_listener_first: bool) -> isize {
    for _ in 0..3 {
        round(drop_listener_first);
    }
    let before = LIVE.load(Relaxed);
    for _ in 0..rounds {
        round(drop_listener_first);
    }
    LIVE.load(Relaxed) - before
}

/// Issue 15, suspected case "`Shared` and the slab's pages hold each other in an `Arc`
/// cycle broken only at the end of `Supervisor::run`: a runtime shut down with a live
/// listener leaks both" (confirmed). 50 runtimes, each with a listener that accepted one
/// connection, shut down while the listener lives: the heap must come back to where it
/// was (a few KiB of noise allowed). Control: the same with the listener dropped first,
/// so that the supervisor ends on its own.
#[test]
fn runtimes_shut_down_with_a_live_listener_leak_no_heap() {
    const ROUNDS: usize = 50;
    const NOISE: isize = 16 * 1024;
    let control = growth(ROUNDS, true);
    let live = growth(ROUNDS, false);
    eprintln!(
        "heap growth over {ROUNDS} runtimes: {control} bytes with the listener dropped first, \
         {live} bytes with the listener alive at shutdown"
    );
    assert!(
        control < NOISE,
        "control: {control} bytes left over {ROUNDS} rounds"
    );
    assert!(
        live < NOISE,
        "{ROUNDS} runtimes shut down with a live listener left {live} bytes on the heap \
         ({} per runtime; the control left {control})",
        live / ROUNDS as isize
    );
}
