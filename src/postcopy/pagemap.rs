//! A fixed-size atomic bitmap, one bit per guest page: the destination's
//! received and requested maps and the source's sent map.
//!
//! The only writer operation is [`PageMap::claim`] (`fetch_or`), so among
//! any number of threads racing to claim a page exactly one sees `true`:
//! that thread owns the page's one placement (or one send).

use crate::sync::{AtomicU64, Ordering};

/// One bit per page.
#[derive(Debug)]
pub struct PageMap {
    words: Box<[AtomicU64]>,
    pages: u64,
}

impl PageMap {
    /// A map of `pages` clear bits.
    pub fn new(pages: u64) -> PageMap {
        let words = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        PageMap { words, pages }
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    fn at(&self, page: u64) -> (&AtomicU64, u64) {
        assert!(page < self.pages, "page {page} outside a map of {} pages", self.pages);
        (&self.words[(page / 64) as usize], 1u64 << (page % 64))
    }

    /// Sets the bit; true if this call set it (the caller owns the page).
    ///
    /// AcqRel: C1 (Release) publishes what the claimer did before claiming;
    /// the Acquire half pairs with C1 of an earlier claimer, so a loser sees
    /// that claimer's prior writes (for example the request time stored
    /// before a request is claimed). Pairs also with T1 in [`Self::test`].
    pub fn claim(&self, page: u64) -> bool {
        let (w, bit) = self.at(page);
        w.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// Whether the bit is set. T1 (Acquire): pairs with C1 in
    /// [`Self::claim`]; a `true` here shows the claimer's earlier writes.
    pub fn test(&self, page: u64) -> bool {
        let (w, bit) = self.at(page);
        w.load(Ordering::Acquire) & bit != 0
    }

    /// Bits set (a snapshot). Relaxed: a count for progress and statistics;
    /// nothing is read on the strength of it.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.load(Ordering::Relaxed).count_ones())).sum()
    }

    /// The first clear bit at or after `from`, if any (a snapshot).
    /// Relaxed: a search hint; the caller [`claim`](Self::claim)s the page
    /// before acting on it.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        let mut p = from;
        while p < self.pages {
            let w = self.words[(p / 64) as usize].load(Ordering::Relaxed) | ((1u64 << (p % 64)) - 1);
            if w != u64::MAX {
                let q = (p / 64) * 64 + u64::from((!w).trailing_zeros());
                return (q < self.pages).then_some(q);
            }
            p = (p / 64 + 1) * 64;
        }
        None
    }
}

#[cfg(all(test, not(vmig_loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_once_and_search() {
        let m = PageMap::new(130);
        assert!(m.claim(0));
        assert!(!m.claim(0));
        assert!(m.claim(129));
        assert_eq!(m.count(), 2);
        assert_eq!(m.next_clear(0), Some(1));
        for p in 1..129 {
            m.claim(p);
        }
        assert_eq!(m.next_clear(0), None);
        assert!(m.test(64));
    }
}
