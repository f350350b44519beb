//! loom model of the postcopy maps (`vmig::postcopy::PageMap`, the shipped
//! code on loom atomics): racing claimers of one page — an answer, a second
//! answer and the background stream — produce exactly one owner, and a
//! thread that sees the bit set also sees what the owner wrote before
//! claiming (C1/T1 in src/postcopy/pagemap.rs).
//!
//! RUSTFLAGS="--cfg vmig_loom" cargo test --release --test loom_postcopy
#![cfg(vmig_loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use vmig::postcopy::PageMap;

#[test]
fn three_claimers_one_owner() {
    loom::model(|| {
        let m = Arc::new(PageMap::new(2));
        let owners = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (m, o) = (m.clone(), owners.clone());
                loom::thread::spawn(move || {
                    if m.claim(1) {
                        // Relaxed: counted after join.
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(owners.load(Ordering::Relaxed), 1);
        assert!(m.test(1));
        assert!(!m.test(0));
    });
}

struct Slot(UnsafeCell<u64>);
// SAFETY: access is ordered by the page map (the property under test).
unsafe impl Sync for Slot {}

#[test]
fn claim_publishes_prior_writes() {
    loom::model(|| {
        let m = Arc::new(PageMap::new(1));
        let slot = Arc::new(Slot(UnsafeCell::new(0)));
        let (m2, s2) = (m.clone(), slot.clone());
        let w = loom::thread::spawn(move || {
            // SAFETY: only this thread writes, before claiming.
            s2.0.with_mut(|p| unsafe { *p = 42 });
            assert!(m2.claim(0));
        });
        if m.test(0) {
            // SAFETY: the claim published the write (loom checks the race).
            assert_eq!(slot.0.with(|p| unsafe { *p }), 42);
        }
        w.join().unwrap();
    });
}
