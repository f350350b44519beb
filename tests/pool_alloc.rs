//! The pools' hot path allocates nothing: a counting global allocator sees
//! no allocation per page once a pool is running (all threads counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use vmig::pool::{CompConfig, CompPool, DecompPool};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a statistic, read after the threads it counts are idle.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Relaxed: as above.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_page() {
    let pages: Vec<Vec<u8>> = (0..64u32).map(|i| (0..4096u32).map(|j| ((j * (i + 3)) % 251) as u8).collect()).collect();
    let mut pool = CompPool::new(&CompConfig { threads: 2, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    let mut dec = DecompPool::new(2, 4096).unwrap();
    let mut out = vec![0u8; 4096 * 64];
    let mut streams: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut run = |pool: &mut CompPool, dec: &mut DecompPool, streams: &mut Vec<Vec<u8>>, rounds: usize| {
        for _ in 0..rounds {
            for (i, p) in pages.iter().enumerate() {
                // SAFETY: `pages` outlives the pool.
                unsafe { pool.submit(p.as_ptr(), i as u64, i, true).unwrap() };
                while let Some(r) = pool.poll() {
                    pool.release(r);
                }
            }
            pool.flush().unwrap();
            while let Some(r) = pool.poll() {
                pool.release(r);
            }
            for (i, z) in streams.iter().enumerate() {
                // SAFETY: `out` outlives `dec.wait()`; pages are disjoint.
                unsafe { dec.submit(z, out.as_mut_ptr().add(i * 4096)).unwrap() };
            }
            dec.wait().unwrap();
        }
    };
    // Streams to decompress, made once (this allocates; it is set-up).
    for p in &pages {
        // SAFETY: `pages` outlives the pool.
        unsafe { pool.submit(p.as_ptr(), 0, 0, true).unwrap() };
        let r = pool.wait_result().unwrap();
        streams.push(r.data().to_vec());
        pool.release(r);
    }
    run(&mut pool, &mut dec, &mut streams, 2); // warm-up: lazily grown tables
    let before = ALLOCS.load(Ordering::Relaxed);
    let rounds = 20;
    run(&mut pool, &mut dec, &mut streams, rounds);
    let after = ALLOCS.load(Ordering::Relaxed);
    let pages_done = (rounds * 64 * 2) as u64; // compressed + decompressed
    eprintln!("{} allocations for {pages_done} pages (counter at {after})", after - before);
    assert!(
        after - before < 8,
        "{} allocations for {pages_done} pages on the hot path",
        after - before
    );
}
