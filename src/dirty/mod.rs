//! The dirty-page scheduler: migration driven by the dirty ring, with a
//! background cursor and no bitmap scan.
//!
//! Peter Xu's design from the review of "migration: Implement dirty ring"
//! (`shared/seeds/dirty-ring-migration.txt`): no dirty bitmap is synced
//! or walked. The migration thread has two sources of pages:
//!
//! * the **background** cursor, which walks guest RAM once, page 0 to
//!   N-1 (the first pass: every page starts pending);
//! * the **queue** of pages marked dirty since (a vmig MPSC
//!   [`ring`](crate::ring) fed by the dirty-ring reapers or vCPU threads).
//!
//! [`DirtyTaker::next`] serves the queue first but gives the background at
//! least one pick in every K ([`DirtyConfig::background_interval`], derived
//! in [`config`] and docs/dirty.md), so the first pass ends within `K * N`
//! picks even when the queue never empties. The derived default is K = 1:
//! a pick of a queued page costs a whole page on the wire and a background
//! pick of unpopulated memory a zero record, so only K = 1 bounds the
//! first pass's *time* for every guest; the queue is served first once the
//! first pass is over.
//!
//! A page is queued at most once: one bit per page ([`pages`]) says "a
//! mark since the last take is recorded", so a repeated mark costs one
//! atomic OR and nothing else. When the ring is full the page goes to the
//! **overflow** set ([`overflow`]), a hierarchical bitmap whose summary
//! levels let the migration thread find set words without scanning: the
//! mark is never dropped and the marking thread never waits. The taker
//! alternates between ring and overflow set, so neither starves.
//!
//! Entries are hints; the queued bit decides. An entry of a page the
//! cursor has not reached is *deferred* (left to the cursor, the bit
//! stays set so later marks are duplicates); an entry whose bit the
//! cursor already cleared is *stale* (the page went out after the mark).
//!
//! ```
//! use vmig::dirty::{scheduler, DirtyConfig};
//! let (marker, mut taker) = scheduler(&DirtyConfig::new(4, 2)).unwrap();
//! assert_eq!(taker.pending(), 4);
//! let mut first_pass = Vec::new();
//! while let Some(p) = taker.next() {
//!     first_pass.push(p);
//! }
//! assert_eq!(first_pass, [0, 1, 2, 3]);
//! marker.mark(2).unwrap();
//! marker.mark(2).unwrap(); // a duplicate: queued once
//! assert_eq!(taker.next(), Some(2));
//! assert_eq!(taker.next(), None);
//! assert_eq!(marker.stats().duplicates, 1);
//! ```
//!
//! # The invariant, and why it holds
//!
//! *A page marked after the migration thread last took it (or never
//! taken) is handed out again later, and what was written to it before
//! the mark is visible to the migration thread when it takes the page
//! after it.*
//!
//! Labels (each Release names its Acquire):
//!
//! * Q1 (mark: `fetch_or` of the page's queued bit, Release) pairs with
//!   Q2 (take: `fetch_and` clearing it, Acquire), in [`pages`]. Every write
//!   to those words is an RMW, so each word's modification order is one
//!   release sequence: a Q2 that comes after a Q1 in it synchronises with
//!   that Q1, whichever RMWs lie between.
//! * The ring's R1/A1 (`crate::ring::raw`) and the overflow set's O3/O4
//!   publish an entry after the Q1 that created it, so when the taker
//!   consumes an entry, that Q1 happens-before the taker's Q2 of the page,
//!   hence precedes it in the modification order.
//! * The taker does Q2 before it reads the page (the caller sends the page
//!   after `next` returns).
//!
//! Take a mark M of page p, after the guest's write W (W is sequenced
//! before M, or happens-before it through the VMM's own hand-off, e.g. the
//! dirty ring's). Look at M's Q1 in the modification order of p's word:
//!
//! 1. **Q1 finds the bit clear.** M records an entry E (ring, or overflow
//!    when full). The taker consumes every entry eventually (`next`
//!    returns None only when ring, overflow set, cursor and the taker's
//!    local batches — ring entries dequeued in a burst, an overflow word
//!    taken whole — are all empty); an entry is *consumed* when the taker
//!    processes it from its batch.
//!    When it consumes E:
//!    * p is at or past the cursor: E is deferred; the cursor's take of p
//!      is a Q2 after M's Q1 (it happens after E was consumed) — case 3.
//!    * otherwise the taker runs Q2 on p, after M's Q1 (the entry's
//!      hand-off). If Q2 reads the bit set, p is handed out and Q2
//!      synchronised with Q1: W is visible. If it reads the bit clear,
//!      another Q2 cleared it after M's Q1: that take handed p out (the
//!      cursor always hands out; a queue take hands out exactly when it
//!      clears a set bit) and it synchronised with M's Q1.
//! 2. **Q1 finds the bit set** (a duplicate). An earlier mark set it and
//!    no Q2 has cleared it yet; its entry is not consumed yet, or it was
//!    deferred to the cursor. The next Q2 of p comes after M's Q1, reads a
//!    set bit, hands p out and synchronises with M's Q1 (release sequence).
//! 3. **The cursor's take.** The cursor always hands out the page it
//!    passes and runs Q2 on it when the bit is (seen) set, so it covers
//!    every mark whose entry it deferred, and every mark whose Q1 it
//!    reads; a mark it does not see keeps its bit and entry (case 1).
//!
//! **The background pass peeks.** Before its Q2 the cursor reads the bit
//! Relaxed and skips the RMW when it looks clear (most of RAM is never
//! marked during the first pass). A stale "clear" is harmless: the bit
//! stays set, so the mark's entry, consumed later, finds it set and hands
//! the page out again with its own Q2 (case 1). A deferred entry is never
//! missed this way: the taker consumed it (ring A1 / O4, after the mark's
//! Q1), so by read-read coherence its later peek sees the bit set.
//!
//! The race of a mark with the take of the same page is cases 1 and 2 with
//! M's Q1 on either side of the take's Q2: before it, the take sends W;
//! after it, the bit is clear again and M queues p anew.
//! `tests/loom_dirty.rs` model-checks these races against this code
//! (atomics from `crate::sync`); `tests/dirty_stress.rs` checks the
//! invariant with versions written into pages by several threads.
//!
//! A counted estimate of the queued pages ([`DirtyTaker::pending`]) is
//! Relaxed: it hands off nothing and only steers the switch-over.

pub mod config;
mod overflow;
mod pages;
mod scheduler;

pub use config::{DirtyConfig, DEFAULT_FIRST_PASS_STRETCH};
pub use scheduler::{scheduler, DirtyMarker, DirtyStats, DirtyTaker};

#[cfg(all(test, not(vmig_loom)))]
mod tests {
    use super::*;

    fn drain(t: &mut DirtyTaker) -> Vec<u64> {
        std::iter::from_fn(|| t.next()).collect()
    }

    #[test]
    fn bad_shapes_are_rejected() {
        for (n, c) in [(0, 4), (10, 0), (10, 1), (10, 3), (10, 6), (10, (1 << 30) + 1), (u64::MAX, 4)] {
            assert!(scheduler(&DirtyConfig::new(n, c)).is_err(), "{n} {c}");
        }
        let c = DirtyConfig { first_pass_stretch: 0, ..DirtyConfig::new(10, 4) };
        assert!(scheduler(&c).is_err());
    }

    #[test]
    fn first_pass_sends_every_page_once() {
        let (m, mut t) = scheduler(&DirtyConfig::new(130, 4)).unwrap();
        assert_eq!(m.pending(), 130);
        assert_eq!(drain(&mut t), (0..130).collect::<Vec<_>>());
        assert_eq!(t.pending(), 0);
        let s = t.stats();
        assert_eq!((s.handed_out, s.from_background, s.background_remaining), (130, 130, 0));
        assert_eq!(m.mark(130), Err(crate::Error::InvalidArgument("page is out of range")));
    }

    #[test]
    fn queue_is_served_first_but_background_every_k() {
        let k2 = DirtyConfig { first_pass_stretch: 2, ..DirtyConfig::new(100, 64) };
        let (m, mut t) = scheduler(&k2).unwrap();
        // Pass pages 0..10 first, so marks of them are not deferred.
        for _ in 0..10 {
            t.next().unwrap();
        }
        for p in 0..10 {
            m.mark(p).unwrap();
        }
        let picks: Vec<u64> = (0..8).map(|_| t.next().unwrap()).collect();
        // K = 2: queue, background, queue, background ...
        assert_eq!(picks, [0, 10, 1, 11, 2, 12, 3, 13]);
        let k4 = DirtyConfig { first_pass_stretch: 4, ..DirtyConfig::new(100, 64) };
        let (m, mut t) = scheduler(&k4).unwrap();
        t.next().unwrap();
        t.next().unwrap();
        for _ in 0..5 {
            // The queue never empties: three queue picks, then the
            // background's turn.
            for _ in 0..3 {
                m.mark(0).unwrap();
                m.mark(1).unwrap();
                assert!(t.next().unwrap() < 2);
            }
            let bg = t.next().unwrap();
            assert!(bg >= 2, "{bg}");
        }
    }

    #[test]
    fn duplicates_are_suppressed_until_taken() {
        let (m, mut t) = scheduler(&DirtyConfig::new(8, 4)).unwrap();
        drain(&mut t);
        for _ in 0..5 {
            m.mark(3).unwrap();
        }
        assert_eq!(m.mark_burst(&[3, 4, 3, 4]), 4);
        let s = m.stats();
        assert_eq!((s.marks, s.duplicates, s.queued), (9, 7, 2));
        assert_eq!(t.pending(), 2);
        assert_eq!(drain(&mut t), [3, 4]);
        m.mark(3).unwrap();
        assert_eq!(drain(&mut t), [3], "taken, so the next mark queues it again");
    }

    #[test]
    fn burst_stops_at_the_first_bad_page() {
        let (m, mut t) = scheduler(&DirtyConfig::new(8, 4)).unwrap();
        drain(&mut t);
        assert_eq!(m.mark_burst(&[1, 2, 8, 3]), 2);
        assert_eq!(m.mark_burst(&[]), 0);
        assert_eq!(drain(&mut t), [1, 2]);
    }

    #[test]
    fn full_queue_overflows_and_loses_nothing() {
        let n = 10_000;
        let (m, mut t) = scheduler(&DirtyConfig::new(n, 4)).unwrap();
        drain(&mut t);
        let marked: Vec<u64> = (0..n).step_by(7).collect();
        assert_eq!(m.mark_burst(&marked), marked.len());
        let s = m.stats();
        assert_eq!(s.overflowed, marked.len() as u64 - 4);
        let mut got = drain(&mut t);
        got.sort_unstable();
        assert_eq!(got, marked);
        assert!(t.stats().from_overflow > 0);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn marks_ahead_of_the_cursor_are_left_to_it() {
        let k2 = DirtyConfig { first_pass_stretch: 2, ..DirtyConfig::new(6, 4) };
        let (m, mut t) = scheduler(&k2).unwrap();
        assert_eq!(t.next(), Some(0));
        m.mark(4).unwrap();
        m.mark(4).unwrap();
        m.mark(0).unwrap();
        // 0 from the queue, then the cursor; 4's entry is deferred and the
        // cursor sends it once.
        assert_eq!(drain(&mut t), [0, 1, 2, 3, 4, 5]);
        let s = t.stats();
        assert_eq!((s.deferred, s.duplicates, s.queued), (1, 1, 0));
    }

    #[test]
    fn entries_taken_by_the_cursor_turn_stale() {
        let (m, mut t) = scheduler(&DirtyConfig::new(4, 4)).unwrap();
        assert_eq!(DirtyConfig::new(4, 4).background_interval(), 1, "the default K");
        // K = 1: the cursor first; page 3's entry is consumed only after.
        m.mark(3).unwrap();
        assert_eq!(drain(&mut t), [0, 1, 2, 3]);
        assert_eq!(t.stats().stale, 1);
    }
}
