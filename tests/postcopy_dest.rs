//! The postcopy destination on a real userfaultfd: every page requested
//! twice and also streamed is placed exactly once, with the right contents,
//! every waiting thread is woken, and `fail` releases waiters without a
//! hang. Skips loudly where userfaultfd is unavailable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use vmig::postcopy::{Placement, PostcopyDest};

const PAGE: usize = 4096;

struct Region {
    base: *mut u8,
    len: usize,
}
// SAFETY: plain memory; the test accesses it with volatile reads only.
unsafe impl Sync for Region {}
// SAFETY: as above.
unsafe impl Send for Region {}

impl Region {
    fn new(pages: usize) -> Region {
        let len = pages * PAGE;
        // SAFETY: anonymous private mapping with no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Region { base: p.cast(), len }
    }
    /// Reads the first word of `page` (faults it in).
    fn word(&self, page: usize) -> u64 {
        // SAFETY: inside the mapping; volatile because the engine fills it.
        unsafe { std::ptr::read_volatile(self.base.add(page * PAGE).cast::<u64>()) }
    }
}
impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping from `new`, unused now.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_data(page: usize) -> Vec<u8> {
    let mut v = vec![0u8; PAGE];
    for (i, c) in v.chunks_mut(8).enumerate() {
        c.copy_from_slice(&((page as u64) << 20 | i as u64 | 1 << 63).to_le_bytes());
    }
    v
}

fn dest(r: &Region) -> Option<PostcopyDest> {
    // SAFETY: the region outlives the engine in each test (dropped after it).
    match unsafe { PostcopyDest::new(r.base, r.len, PAGE) } {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP: userfaultfd unusable here ({e}); postcopy destination tests not run");
            None
        }
    }
}

/// Toucher threads fault on every page (each page by two threads); the
/// fault service hands requests to two answer threads that both place each
/// requested page; a background thread streams every page too.
#[test]
fn requested_twice_and_streamed_is_placed_exactly_once() {
    let pages = 2048usize;
    let r = Region::new(pages);
    let Some(d) = dest(&r) else { return };
    let present = 16;
    for p in 0..present {
        assert!(d.mark_present(p as u64).unwrap());
    }
    assert!(!d.mark_present(0).unwrap());
    let queue = Mutex::new(Vec::<u64>::new());
    let placed_by_us = AtomicU64::new(0);
    let dups = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let requests_seen = AtomicU64::new(0);
    std::thread::scope(|s| {
        // Touchers: two per page (even and odd offsets of one sweep).
        for t in 0..4usize {
            let (r, d) = (&r, &d);
            s.spawn(move || {
                for i in 0..pages {
                    let p = (i * 7 + t / 2 * 13) % pages;
                    if p < present {
                        continue;
                    }
                    let w = r.word(p);
                    assert!(!d.is_failed());
                    assert_eq!(w, (p as u64) << 20 | 1 << 63, "page {p} wrong when first read");
                }
            });
        }
        // Fault service.
        let (d2, q, stop2, seen) = (&d, &queue, &stop, &requests_seen);
        s.spawn(move || {
            d2.serve_faults(&mut |p| {
                seen.fetch_add(1, Ordering::Relaxed);
                q.lock().unwrap().push(p);
                Ok(())
            })
            .unwrap();
            stop2.store(true, Ordering::Release);
        });
        // Two answer threads: each places every requested page it sees.
        for _ in 0..2 {
            let (d, q, stop, placed, dups) = (&d, &queue, &stop, &placed_by_us, &dups);
            s.spawn(move || {
                let mut next = 0;
                loop {
                    // Read `stop` before taking the batch: its Acquire pairs
                    // with the fault service's Release store after its last
                    // push, so once it reads true this batch holds every
                    // request and the thread drains them before leaving
                    // (leaving on the flag alone lost the last requests).
                    let done = stop.load(Ordering::Acquire);
                    let batch: Vec<u64> = q.lock().unwrap()[next..].to_vec();
                    next += batch.len();
                    for p in batch {
                        match d.place(p, &page_data(p as usize)).unwrap() {
                            Placement::Placed => placed.fetch_add(1, Ordering::Relaxed),
                            Placement::Duplicate => dups.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    if done {
                        break;
                    }
                    std::thread::yield_now();
                }
            });
        }
        // Background stream: every page, slowly enough that requests
        // matter. It starts after the first request, so some page is
        // always requested however the host schedules the touchers (on a
        // loaded machine the stream once placed every page before any
        // toucher ran).
        let (d, placed, dups, seen) = (&d, &placed_by_us, &dups, &requests_seen);
        s.spawn(move || {
            // Relaxed: only waits for the count to move; the pages' state
            // is read through the engine's own synchronisation.
            while seen.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            for p in 0..pages {
                match d.place(p as u64, &page_data(p)).unwrap() {
                    Placement::Placed => placed.fetch_add(1, Ordering::Relaxed),
                    Placement::Duplicate => dups.fetch_add(1, Ordering::Relaxed),
                };
                if p % 64 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        });
    });
    let c = d.counters();
    assert_eq!(d.remaining(), 0);
    assert_eq!(c.placed, (pages - present) as u64, "{c:?}");
    assert_eq!(placed_by_us.load(Ordering::Relaxed), (pages - present) as u64);
    // Each request was placed by two answer threads, each page also
    // streamed: every attempt that did not place was counted a duplicate.
    let attempts = 2 * requests_seen.load(Ordering::Relaxed) + pages as u64;
    assert_eq!(placed_by_us.load(Ordering::Relaxed) + dups.load(Ordering::Relaxed), attempts);
    assert_eq!(c.duplicates, dups.load(Ordering::Relaxed));
    assert!(c.requests > 0, "nothing faulted: {c:?}");
    assert!(c.requests <= c.faults);
    assert!(d.latency().count <= c.requests);
    for p in present..pages {
        // SAFETY: every writer has stopped; inside the mapping.
        let got = unsafe { std::slice::from_raw_parts(r.base.add(p * PAGE), PAGE) };
        assert_eq!(got, &page_data(p)[..], "page {p}");
    }
    for p in 0..pages {
        assert!(d.is_placed(p as u64));
    }
    drop(d);
}

/// Threads blocked on pages that never come are released by `fail`, see
/// the flag and stop; the zero-page path places and wakes too.
#[test]
fn fail_releases_waiters_and_zero_pages_wake() {
    let pages = 64usize;
    let r = Region::new(pages);
    let Some(d) = dest(&r) else { return };
    let released = AtomicU64::new(0);
    std::thread::scope(|s| {
        let (r2, d2) = (&r, &d);
        s.spawn(move || assert_eq!(r2.word(1), 0));
        let mut got = Vec::new();
        while got.is_empty() {
            d.wait_requests(100, &mut got).unwrap();
        }
        assert_eq!(got, vec![1]);
        assert_eq!(d2.place_zero(1).unwrap(), Placement::Placed);
        for t in 0..3usize {
            let (r, d, rel) = (&r, &d, &released);
            s.spawn(move || {
                let _ = r.word(10 + t);
                // The access returned: only `fail` can have released it.
                assert!(d.is_failed());
                rel.fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            d.wait_requests(100, &mut seen).unwrap();
        }
        d.fail();
    });
    assert_eq!(released.load(Ordering::Relaxed), 3);
    assert!(d.place(2, &page_data(2)).is_err());
    assert_eq!(d.counters().requests, 4);
}
