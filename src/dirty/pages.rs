//! One bit per guest page: "a mark since the migration thread last took
//! this page is recorded and not yet taken" (the page is *queued*).
//!
//! This is a membership set, never scanned: [`QueuedSet::insert`] is the
//! O(1) duplicate check of `mark`, [`QueuedSet::take`] the migration
//! thread's claim of a page it is about to send. Every write to a word is
//! a read-modify-write, so each word's modification order is one release
//! sequence: a take that reads a bit set by a mark synchronises with that
//! mark (the ordering argument is in `super`'s module doc, Q1/Q2).

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};

/// A fixed-size set of pages, one bit each.
pub(crate) struct QueuedSet {
    words: Box<[AtomicU64]>,
}

impl std::fmt::Debug for QueuedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedSet").field("words", &self.words.len()).finish()
    }
}

/// Allocates `n` zeroed atomic words, or `OutOfMemory` (a huge `nr_pages`
/// from C must fail the call, not abort the VMM).
pub(crate) fn atomic_words(n: u64) -> Result<Box<[AtomicU64]>> {
    let n = usize::try_from(n).map_err(|_| Error::OutOfMemory)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    v.extend((0..n).map(|_| AtomicU64::new(0)));
    Ok(v.into_boxed_slice())
}

#[inline]
fn split(page: u64) -> (usize, u64) {
    ((page / 64) as usize, 1u64 << (page % 64))
}

impl QueuedSet {
    /// A set for `pages` pages, all absent.
    pub(crate) fn new(pages: u64) -> Result<Self> {
        Ok(QueuedSet { words: atomic_words(pages.div_ceil(64))? })
    }

    /// Adds `page`; true when it was absent (the caller must then record
    /// an entry for it: ring slot or overflow bit).
    #[inline]
    pub(crate) fn insert(&self, page: u64) -> bool {
        let (w, bit) = split(page);
        // Q1 (Release): publishes the guest's writes to the page made before
        // the mark; pairs with Q2 in `take`. An RMW, so it also continues the
        // release sequence of earlier marks of the word.
        self.words[w].fetch_or(bit, Ordering::Release) & bit == 0
    }

    /// Whether `page` looks present: a Relaxed peek, for the migration
    /// thread's background pass, which skips the RMW of [`take`](Self::take)
    /// when the bit looks clear. Why that loses nothing is in `super`'s
    /// module doc ("The background pass peeks").
    #[inline]
    pub(crate) fn peek(&self, page: u64) -> bool {
        let (w, bit) = split(page);
        // Relaxed: a hint; a stale "clear" leaves the bit set for the
        // page's queue entry, which the taker consumes later with Q2.
        self.words[w].load(Ordering::Relaxed) & bit != 0
    }

    /// Removes `page`; true when it was present. Only the migration thread
    /// calls this, right before it reads the page.
    #[inline]
    pub(crate) fn take(&self, page: u64) -> bool {
        let (w, bit) = split(page);
        // Q2 (Acquire): pairs with Q1 of every mark of this page that comes
        // before this RMW in the word's modification order; the page data
        // they published is visible to the read that follows.
        self.words[w].fetch_and(!bit, Ordering::Acquire) & bit != 0
    }
}
