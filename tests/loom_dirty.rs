//! loom models of the dirty-page scheduler's hand-offs, run against the
//! real code (`vmig::dirty` takes its atomics from `crate::sync`, loom's
//! under `--cfg vmig_loom`):
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg vmig_loom" cargo test --release --test loom_dirty
//! ```
//!
//! Guest memory is one loom `AtomicU64` per page, written and read
//! Relaxed: the only thing that can make the migration thread's read see a
//! write is the scheduler's Release/Acquire pairs (Q1/Q2, the ring's
//! R1/A1, the overflow set's O3/O4). Each model checks the invariant: once
//! the producers are done and the taker has drained the scheduler, the
//! version the taker last read from every page is the last one written.
#![cfg(vmig_loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use vmig::dirty::{scheduler, DirtyConfig};

struct Ram(Vec<AtomicU64>);

impl Ram {
    fn new(pages: usize) -> Arc<Self> {
        Arc::new(Ram((0..pages).map(|_| AtomicU64::new(0)).collect()))
    }
    fn write(&self, page: u64, v: u64) {
        // Relaxed: the guest's plain write; ordering is the scheduler's job.
        self.0[page as usize].store(v, Ordering::Relaxed);
    }
    fn read(&self, page: u64) -> u64 {
        // Relaxed: the migration thread's copy of the page.
        self.0[page as usize].load(Ordering::Relaxed)
    }
}

/// Takes up to `tries` pages (concurrently with the producers), then,
/// after `join`, drains; returns what was last read from each page.
fn take_all(
    taker: &mut vmig::dirty::DirtyTaker,
    ram: &Ram,
    pages: usize,
    tries: usize,
    join: impl FnOnce(),
) -> Vec<u64> {
    let mut last = vec![u64::MAX; pages];
    for _ in 0..tries {
        if let Some(p) = taker.next() {
            last[p as usize] = ram.read(p);
        }
    }
    join();
    while let Some(p) = taker.next() {
        last[p as usize] = ram.read(p);
    }
    assert_eq!(taker.pending(), 0);
    last
}

/// The race of a mark with the take of the same page, after the first
/// pass: the producer writes and marks page 0 twice while the migration
/// thread takes. Whichever side of the take each mark falls on, the last
/// version reaches the taker.
#[test]
fn mark_races_take_of_the_same_page() {
    loom::model(|| {
        let ram = Ram::new(2);
        let (marker, mut taker) = scheduler(&DirtyConfig::new(2, 2)).unwrap();
        while taker.next().is_some() {}
        let r = ram.clone();
        let producer = thread::spawn(move || {
            for v in 1..=2 {
                r.write(0, v);
                marker.mark(0).unwrap();
            }
        });
        let last = take_all(&mut taker, &ram, 2, 2, || producer.join().unwrap());
        assert_eq!(last[0], 2, "the last write before the last mark was not taken after it");
    });
}

/// Marks during the first pass: page 1 is marked while the background
/// cursor may or may not have passed it (deferred, stale and queued
/// entries all occur).
#[test]
fn mark_races_the_background_cursor() {
    // K = 1 (the default) leaves the entry until the first pass is over;
    // K = 2 polls the queue during it, so the entry can also be deferred.
    for k in [1, 2] {
        mark_races_the_background_cursor_with(k);
    }
}

fn mark_races_the_background_cursor_with(k: u32) {
    loom::model(move || {
        let ram = Ram::new(2);
        let cfg = DirtyConfig { first_pass_stretch: k, ..DirtyConfig::new(2, 2) };
        let (marker, mut taker) = scheduler(&cfg).unwrap();
        let r = ram.clone();
        let producer = thread::spawn(move || {
            r.write(1, 1);
            marker.mark(1).unwrap();
        });
        let last = take_all(&mut taker, &ram, 2, 2, || producer.join().unwrap());
        assert_eq!(last, [0, 1]);
    });
}

/// Two producers and a queue of 2 for three marks: one of them goes to
/// the overflow set while the taker consumes the ring concurrently.
#[test]
fn overflow_hands_off_with_two_producers() {
    loom::model(|| {
        let ram = Ram::new(3);
        let (marker, mut taker) = scheduler(&DirtyConfig::new(3, 2)).unwrap();
        while taker.next().is_some() {}
        let (r, m) = (ram.clone(), marker.clone());
        let a = thread::spawn(move || {
            r.write(0, 1);
            m.mark(0).unwrap();
            r.write(1, 1);
            m.mark(1).unwrap();
        });
        let r = ram.clone();
        let b = thread::spawn(move || {
            r.write(2, 1);
            assert_eq!(marker.mark_burst(&[2]), 1);
        });
        let last = take_all(&mut taker, &ram, 3, 1, || {
            a.join().unwrap();
            b.join().unwrap();
        });
        assert_eq!(last, [1, 1, 1]);
    });
}
