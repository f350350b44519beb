//! The overflow set: pages queued while the ring was full.
//!
//! A hierarchical atomic bitmap: level 0 has one bit per page, each level
//! above one bit per word of the level below ("this word may have a bit
//! set"), up to a single top word. A mark that finds the ring full sets
//! its page's bit and then one bit per level, bottom up; the migration
//! thread finds work by descending from the top word, so it reads only
//! words that have (or recently had) a bit set: O(levels) per found word,
//! never a scan of the whole bitmap. 64 GiB of 4-KiB pages is 2^24 bits:
//! 4 levels (262144, 4096, 64 and 1 words).
//!
//! The migration thread takes a whole leaf word at once (`swap(0)`) and
//! leaves the summary bits above it set; they are cleaned lazily: a
//! descent that meets an empty word clears the parent bit that led there
//! and re-checks the word, setting the bit again if a mark filled it in
//! between.
//!
//! # Why no page is lost (O1/O2, O3/O4)
//!
//! A mark sets the child bit, then the parent bit with O1 (Release); the
//! cleaner clears the parent bit with O2 (Acquire, an RMW), then re-reads
//! the child. In the parent word's modification order either O1 comes
//! first, then O2 reads O1's value (or a later RMW's: every write here is
//! an RMW, so it is one release sequence), so O1 synchronises with O2 and
//! the re-read sees the child bit and restores the parent; or O2 comes
//! first, and O1 leaves the parent bit set afterwards. Either way a set
//! child bit stays reachable from the top.
//!
//! O3 (Release, the mark's leaf set) pairs with O4 (Acquire, the leaf
//! `swap`): the mark's queued-bit insert (Q1, sequenced before O3)
//! happens-before the migration thread's take of the page (Q2, after O4),
//! so the take sees the page queued — an entry is never consumed before
//! the queued bit it stands for.

use crate::error::Result;
use crate::sync::{AtomicU64, Ordering};

use super::pages::atomic_words;

/// The overflow set (see the module doc).
pub(crate) struct OverflowSet {
    /// `levels[0]` one bit per page; `levels.last()` a single word.
    levels: Vec<Box<[AtomicU64]>>,
}

impl std::fmt::Debug for OverflowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowSet").field("levels", &self.levels.len()).finish()
    }
}

impl OverflowSet {
    /// An empty set for `pages` pages.
    pub(crate) fn new(pages: u64) -> Result<Self> {
        let mut levels = Vec::new();
        let mut bits = pages.max(1);
        loop {
            let words = bits.div_ceil(64);
            levels.push(atomic_words(words)?);
            if words == 1 {
                return Ok(OverflowSet { levels });
            }
            bits = words;
        }
    }

    /// Adds `page` (any thread; never blocks).
    pub(crate) fn insert(&self, page: u64) {
        let mut idx = page;
        for level in &self.levels {
            let (w, bit) = ((idx / 64) as usize, 1u64 << (idx % 64));
            // O3 (Release) at the leaf: pairs with O4 in `take_word`. O1
            // (Release) above it: pairs with O2 in `descend`.
            level[w].fetch_or(bit, Ordering::Release);
            idx /= 64;
        }
    }

    /// Whether the set may hold a page (a snapshot; stale summary bits may
    /// make it say yes when the set is empty).
    pub(crate) fn maybe_nonempty(&self) -> bool {
        // Relaxed: a hint for the caller's fast path; `take_word` decides.
        self.top().load(Ordering::Relaxed) != 0
    }

    fn top(&self) -> &AtomicU64 {
        &self.levels[self.levels.len() - 1][0]
    }

    /// Removes one non-empty leaf word and returns `(first page of the
    /// word, its bits)`, or None when the set is empty. Migration thread
    /// only.
    pub(crate) fn take_word(&self) -> Option<(u64, u64)> {
        'restart: loop {
            let top_level = self.levels.len() - 1;
            // Word index at the current level.
            let mut idx = 0usize;
            for i in (0..=top_level).rev() {
                let word = &self.levels[i][idx];
                // Relaxed: finding a candidate; O2 and O4 order what matters.
                let bits = word.load(Ordering::Relaxed);
                if bits == 0 {
                    if i == top_level {
                        return None;
                    }
                    self.clean(i, idx);
                    continue 'restart;
                }
                let child = idx * 64 + bits.trailing_zeros() as usize;
                if i == 0 {
                    // O4 (Acquire): pairs with O3 in `insert`.
                    let taken = word.swap(0, Ordering::Acquire);
                    if taken == 0 {
                        continue 'restart;
                    }
                    return Some((idx as u64 * 64, taken));
                }
                idx = child;
            }
            unreachable!("the descent returns at level 0");
        }
    }

    /// Level `i` word `idx` was found empty: clear the parent bit that
    /// pointed at it, then restore it if the word filled in meanwhile.
    fn clean(&self, i: usize, idx: usize) {
        let parent = &self.levels[i + 1][idx / 64];
        let bit = 1u64 << (idx % 64);
        // O2 (Acquire): pairs with O1 in `insert` (module doc).
        parent.fetch_and(!bit, Ordering::Acquire);
        // Relaxed: O2 made any child bit set before a parent O1 it read visible.
        if self.levels[i][idx].load(Ordering::Relaxed) != 0 {
            // Relaxed: restores a summary bit; the marks that set the child
            // bits published them with their own O3.
            parent.fetch_or(bit, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(vmig_loom)))]
mod tests {
    use super::*;

    #[test]
    fn levels_cover_the_pages() {
        assert_eq!(OverflowSet::new(1).unwrap().levels.len(), 1);
        assert_eq!(OverflowSet::new(64).unwrap().levels.len(), 1);
        assert_eq!(OverflowSet::new(65).unwrap().levels.len(), 2);
        assert_eq!(OverflowSet::new(1 << 24).unwrap().levels.len(), 4);
    }

    #[test]
    fn takes_every_inserted_page_once() {
        let s = OverflowSet::new(300_000).unwrap();
        let pages = [0u64, 1, 63, 64, 4095, 4096, 262_143, 299_999];
        for p in pages {
            s.insert(p);
        }
        s.insert(1);
        let mut got = Vec::new();
        while let Some((base, mut bits)) = s.take_word() {
            while bits != 0 {
                got.push(base + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        got.sort_unstable();
        assert_eq!(got, pages);
        assert!(s.take_word().is_none());
        // Stale summary bits were cleaned on the way.
        assert!(!s.maybe_nonempty());
        s.insert(77);
        assert_eq!(s.take_word(), Some((64, 1 << 13)));
    }
}
