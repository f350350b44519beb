//! Multi-producer stress of the dirty-page scheduler: producers write a
//! version into a page and then mark it, from several threads at once,
//! with a queue small enough that the overflow set is used all the time,
//! while the migration thread takes pages and reads them. Checks the
//! invariant: for every page, the version the taker read the last time it
//! took the page is the last version written (a write before a mark is
//! always taken after it), and a page's versions never go backwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use vmig::dirty::{scheduler, DirtyConfig};

const PRODUCERS: u64 = 3;
const PAGES: u64 = 4096;

fn marks_per_producer() -> u64 {
    if cfg!(debug_assertions) {
        20_000
    } else {
        1_000_000
    }
}

fn run(queue_capacity: u32, burst: bool) {
    // Page p belongs to producer p % PRODUCERS (one writer per page, so
    // its versions only grow).
    let ram: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let (marker, mut taker) = scheduler(&DirtyConfig::new(PAGES, queue_capacity)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let (ram, marker) = (ram.clone(), marker.clone());
            thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id + 1);
                let own = PAGES / PRODUCERS;
                let mut batch = Vec::with_capacity(16);
                for v in 1..=marks_per_producer() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = (x % own) * PRODUCERS + id;
                    // Relaxed: the guest's write; the mark orders it (Q1).
                    ram[page as usize].store(v, Ordering::Relaxed);
                    if burst {
                        batch.push(page);
                        if batch.len() == 16 {
                            assert_eq!(marker.mark_burst(&batch), 16);
                            batch.clear();
                        }
                    } else {
                        marker.mark(page).unwrap();
                    }
                    if v % 256 == 0 {
                        // Two cores for three producers and the taker: let
                        // the taker run while marks are still coming.
                        thread::yield_now();
                    }
                }
                assert_eq!(marker.mark_burst(&batch), batch.len());
            })
        })
        .collect();
    let mut last = vec![0u64; PAGES as usize];
    let mut takes = 0u64;
    let mut concurrent_takes = 0u64;
    let see = |p: u64, last: &mut Vec<u64>| {
        // Relaxed: the migration thread's read of the page after `next`.
        let v = ram[p as usize].load(Ordering::Relaxed);
        assert!(v >= last[p as usize], "page {p} went back from {} to {v}", last[p as usize]);
        last[p as usize] = v;
    };
    let waiter = {
        let done = done.clone();
        thread::spawn(move || {
            for p in producers {
                p.join().unwrap();
            }
            // Release: the producers' writes and marks before it; pairs
            // with the Acquire load below.
            done.store(true, Ordering::Release);
        })
    };
    // Acquire: pairs with the Release store above.
    while !done.load(Ordering::Acquire) {
        match taker.next() {
            Some(p) => {
                see(p, &mut last);
                takes += 1;
                concurrent_takes += 1;
            }
            None => thread::yield_now(),
        }
    }
    waiter.join().unwrap();
    while let Some(p) = taker.next() {
        see(p, &mut last);
        takes += 1;
    }
    for p in 0..PAGES as usize {
        // Relaxed: every producer was joined.
        let written = ram[p].load(Ordering::Relaxed);
        assert_eq!(last[p], written, "page {p}: last write {written} was not taken after its mark");
    }
    let s = taker.stats();
    assert_eq!(s.marks, PRODUCERS * marks_per_producer());
    assert_eq!(s.handed_out, takes);
    assert_eq!((s.queued, s.background_remaining, taker.pending()), (0, 0, 0));
    // Every non-duplicate mark created an entry; each consumed entry was
    // handed out, stale or deferred. Two entries of one page can merge in
    // the overflow set (one bit), so created >= consumed.
    let consumed = (s.handed_out - s.from_background) + s.stale + s.deferred;
    assert!(s.marks - s.duplicates >= consumed, "{s:?}");
    if queue_capacity < 64 {
        assert!(s.overflowed > 0 && s.from_overflow > 0, "{s:?}");
    }
    eprintln!("queue {queue_capacity} burst {burst}: {concurrent_takes} takes while marking; {s:?}");
}

#[test]
fn marks_from_three_threads_small_queue() {
    run(16, false);
}

#[test]
fn bursts_from_three_threads_small_queue() {
    run(16, true);
}

#[test]
fn marks_from_three_threads_large_queue() {
    run(8192, false);
}
