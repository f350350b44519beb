//! The two halves of the scheduler: [`DirtyMarker`] (any thread records a
//! dirty page) and [`DirtyTaker`] (the migration thread picks the next
//! page to send). The design and the ordering argument are in the module
//! doc of [`crate::dirty`].

use std::num::NonZeroUsize;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::config::DirtyConfig;
use super::overflow::OverflowSet;
use super::pages::QueuedSet;
use crate::error::{Error, Result};
use crate::ring::{mpsc, Consumer, MpProducer};
use crate::sync::{AtomicU64, Ordering};

/// Counters the marking threads update. Every one is Relaxed: statistics
/// and the pending estimate hand off no data (Q1/Q2 and the ring do).
#[derive(Debug, Default)]
struct MarkCounters {
    marks: AtomicU64,
    duplicates: AtomicU64,
    overflowed: AtomicU64,
}

/// The taker's counters as last published ([`DirtyTaker::publish`]); any
/// thread may read them (stats, pending). Relaxed: single writer,
/// snapshots only.
#[derive(Debug, Default)]
struct TakeCounters {
    handed_out: AtomicU64,
    /// The background cursor: pages `[background_next, nr_pages)` are
    /// still to be sent by the first pass.
    background_next: AtomicU64,
    from_background: AtomicU64,
    from_overflow: AtomicU64,
    stale: AtomicU64,
    deferred: AtomicU64,
    /// Takes that cleared a queued bit. Queued pages = marks that set one
    /// (marks - duplicates) - cleared: no counter shared by markers and
    /// the taker, so a take writes no cache line a marker writes.
    cleared: AtomicU64,
}

struct Shared {
    nr_pages: u64,
    background_interval: u32,
    queued: QueuedSet,
    overflow: OverflowSet,
    tx: MpProducer<NonZeroUsize>,
    marks: CachePadded<MarkCounters>,
    takes: CachePadded<TakeCounters>,
}

/// A snapshot of a scheduler's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyStats {
    /// Pages marked (valid marks; a burst counts its accepted pages).
    pub marks: u64,
    /// Marks of a page already queued, suppressed by the O(1) check.
    pub duplicates: u64,
    /// Marks that found the queue full and went to the overflow set.
    pub overflowed: u64,
    /// Pages the background cursor has not reached yet.
    pub background_remaining: u64,
    /// Pages handed out by `next`, all sources.
    pub handed_out: u64,
    /// Of those, pages from the background cursor.
    pub from_background: u64,
    /// Of those, pages found in the overflow set.
    pub from_overflow: u64,
    /// Pages currently queued (ring or overflow), a snapshot.
    pub queued: u64,
    /// Queue entries dropped because the page had been taken since its
    /// mark (by the background cursor): it was already sent after the mark.
    pub stale: u64,
    /// Queue entries of pages the background cursor had not reached yet:
    /// left to the cursor, which sends them (their queued bit stays set, so
    /// further marks are duplicates until then).
    pub deferred: u64,
    /// K: the background is served at least once in every K picks.
    pub background_interval: u32,
}

/// Records dirty pages. `Clone`, `Send` and `Sync`: any number of threads
/// (reapers, vCPU threads) mark at once; a mark never blocks.
#[derive(Clone)]
pub struct DirtyMarker {
    shared: Arc<Shared>,
}

/// How often the taker publishes its counters: every this many pages
/// handed out, and whenever `next` finds nothing. Counting in plain fields
/// keeps a pick at a few instructions (the first pass makes one pick per
/// guest page); other threads' snapshots lag by fewer than this many picks.
const PUBLISH_EVERY: u64 = 64;

/// The taker's own counts (plain: one thread).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    handed_out: u64,
    from_background: u64,
    from_overflow: u64,
    stale: u64,
    deferred: u64,
    cleared: u64,
}

/// Picks the pages to send. The migration thread's half: `Send`, not
/// `Clone`, and `next` takes `&mut self`, so there is one taker.
pub struct DirtyTaker {
    shared: Arc<Shared>,
    rx: Consumer<NonZeroUsize>,
    /// Next page of the background pass (`takes.background_next` mirrors it).
    background: u64,
    /// Picks since the background was last served.
    since_background: u32,
    /// The overflow leaf word being served: its first page and the bits
    /// not handed out yet.
    batch_base: u64,
    batch_bits: u64,
    /// Alternates which queued source is tried first, so neither the ring
    /// nor the overflow set can starve the other.
    overflow_first: bool,
    /// Ring entries dequeued in one burst and not handed out yet (the
    /// ring's `cons` is published once per burst, not once per page),
    /// served from `ring_next`.
    ring_batch: Vec<NonZeroUsize>,
    ring_next: usize,
    tally: Tally,
}

/// Ring entries taken per dequeue burst.
const RING_BATCH: u32 = 32;

/// Creates a scheduler with every page pending (the first pass sends all
/// of RAM): the marking half and the taking half.
pub fn scheduler(config: &DirtyConfig) -> Result<(DirtyMarker, DirtyTaker)> {
    config.validate()?;
    let (tx, rx) = mpsc::<NonZeroUsize>(config.queue_capacity)?;
    let shared = Arc::new(Shared {
        nr_pages: config.nr_pages,
        background_interval: config.background_interval(),
        queued: QueuedSet::new(config.nr_pages)?,
        overflow: OverflowSet::new(config.nr_pages)?,
        tx,
        marks: CachePadded::new(MarkCounters::default()),
        takes: CachePadded::new(TakeCounters::default()),
    });
    let taker = DirtyTaker {
        shared: shared.clone(),
        rx,
        background: 0,
        since_background: 0,
        batch_base: 0,
        batch_bits: 0,
        overflow_first: false,
        ring_batch: Vec::with_capacity(RING_BATCH as usize),
        ring_next: 0,
        tally: Tally::default(),
    };
    Ok((DirtyMarker { shared }, taker))
}

/// Pages queued now: marks that set a queued bit, less takes that cleared
/// one. A snapshot from counters updated at different times (a burst adds
/// its marks after its entries are published), so clamped at 0.
fn queued(marks: u64, duplicates: u64, cleared: u64) -> u64 {
    marks.saturating_sub(duplicates).saturating_sub(cleared)
}

impl Shared {
    /// Marks a page known to be in range; returns whether it was queued
    /// (false: a duplicate).
    #[inline]
    fn mark_valid(&self, page: u64) -> bool {
        if !self.queued.insert(page) {
            return false;
        }
        // page + 1 != 0: `validate` keeps nr_pages below u64::MAX and in a usize.
        let item = NonZeroUsize::new(page as usize + 1).expect("page + 1 is non-zero");
        // The entry is published after Q1 (ring R1/A1, or O3/O4), so the
        // taker that consumes it sees the queued bit set or already taken.
        if self.tx.enqueue(item).is_err() {
            self.overflow.insert(page);
            // Relaxed: a statistic.
            self.marks.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn stats(&self) -> DirtyStats {
        // Relaxed everywhere: snapshots of counters (see their types).
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let background_next = ld(&self.takes.background_next);
        DirtyStats {
            marks: ld(&self.marks.marks),
            duplicates: ld(&self.marks.duplicates),
            overflowed: ld(&self.marks.overflowed),
            background_remaining: self.nr_pages - background_next,
            handed_out: ld(&self.takes.handed_out),
            from_background: ld(&self.takes.from_background),
            from_overflow: ld(&self.takes.from_overflow),
            queued: queued(ld(&self.marks.marks), ld(&self.marks.duplicates), ld(&self.takes.cleared)),
            stale: ld(&self.takes.stale),
            deferred: ld(&self.takes.deferred),
            background_interval: self.background_interval,
        }
    }

    /// Pages still to send: queued plus background remaining. The taker's
    /// part is as last published (at most PUBLISH_EVERY picks old, exact
    /// once `next` has found nothing). Exact when no mark or take runs
    /// concurrently and the first pass is over;
    /// before that a queued page the cursor has not reached is counted
    /// twice (an upper bound, which is the safe side for a switch-over).
    fn pending(&self) -> u64 {
        let s = self.stats();
        s.queued + s.background_remaining
    }
}

impl DirtyMarker {
    /// Records that `page` was written: the page will be handed out by the
    /// taker after this call, and what the caller (or a thread whose writes
    /// happen-before this call) wrote to it is visible to the taker then.
    /// `InvalidArgument` for `page >= nr_pages`. Never blocks.
    pub fn mark(&self, page: u64) -> Result<()> {
        if page >= self.shared.nr_pages {
            return Err(Error::InvalidArgument("page is out of range"));
        }
        let c = &self.shared.marks;
        // Duplicates first, marks second: a snapshot then never counts a
        // duplicate as a queued page for longer than this call.
        // Relaxed (both): statistics.
        if !self.shared.mark_valid(page) {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        c.marks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Marks `pages` in order until the first out-of-range page; returns
    /// how many were accepted.
    pub fn mark_burst(&self, pages: &[u64]) -> usize {
        let mut dups = 0u64;
        let mut n = 0usize;
        for &page in pages {
            if page >= self.shared.nr_pages {
                break;
            }
            if !self.shared.mark_valid(page) {
                dups += 1;
            }
            n += 1;
        }
        let c = &self.shared.marks;
        // Relaxed (both): statistics, one update per burst (duplicates
        // first, as in `mark`).
        if dups > 0 {
            c.duplicates.fetch_add(dups, Ordering::Relaxed);
        }
        c.marks.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Guest pages.
    pub fn nr_pages(&self) -> u64 {
        self.shared.nr_pages
    }

    /// Pages still to send (see [`DirtyTaker::pending`]).
    pub fn pending(&self) -> u64 {
        self.shared.pending()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DirtyStats {
        self.shared.stats()
    }
}

impl DirtyTaker {
    /// The next page to send, or None when nothing is pending (nothing
    /// queued that a mark has finished publishing, and the first pass is
    /// over). Queued pages come first, but while the first pass has pages
    /// left every K-th pick goes to it (K = `background_interval`).
    // Named after vmig_dirty_next(). Not an Iterator: None means nothing
    // is pending *now*; later marks make it return pages again.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<u64> {
        let page = self.pick();
        match page {
            Some(_) => {
                self.tally.handed_out += 1;
                if self.tally.handed_out % PUBLISH_EVERY == 0 {
                    self.publish();
                }
            }
            None => self.publish(),
        }
        page
    }

    /// Publishes the taker's counters and cursor for other threads.
    fn publish(&self) {
        let (t, l) = (&self.shared.takes, &self.tally);
        // Relaxed (all): single writer, read only as snapshots.
        t.background_next.store(self.background, Ordering::Relaxed);
        t.handed_out.store(l.handed_out, Ordering::Relaxed);
        t.from_background.store(l.from_background, Ordering::Relaxed);
        t.from_overflow.store(l.from_overflow, Ordering::Relaxed);
        t.stale.store(l.stale, Ordering::Relaxed);
        t.deferred.store(l.deferred, Ordering::Relaxed);
        t.cleared.store(l.cleared, Ordering::Relaxed);
    }

    fn pick(&mut self) -> Option<u64> {
        let has_background = self.background < self.shared.nr_pages;
        if has_background && self.since_background + 1 >= self.shared.background_interval {
            return Some(self.take_background());
        }
        if let Some(p) = self.take_queued() {
            self.since_background += 1;
            return Some(p);
        }
        has_background.then(|| self.take_background())
    }

    fn take_background(&mut self) -> u64 {
        let page = self.background;
        self.background += 1;
        self.since_background = 0;
        self.tally.from_background += 1;
        // Q2: synchronises with every mark of the page so far (it may have
        // been queued and deferred to the cursor); its entry, if still in
        // the queue, turns stale. The peek first saves the RMW on the
        // pages nobody marked (most of RAM); see the module doc.
        if self.shared.queued.peek(page) && self.shared.queued.take(page) {
            self.tally.cleared += 1;
        }
        page
    }

    /// A queued page taken from the ring or the overflow set, skipping
    /// stale and deferred entries.
    fn take_queued(&mut self) -> Option<u64> {
        loop {
            self.overflow_first = !self.overflow_first;
            let (page, overflowed) = if self.overflow_first {
                match self.next_overflowed() {
                    Some(p) => (p, true),
                    None => (self.next_ringed()?, false),
                }
            } else {
                match self.next_ringed() {
                    Some(p) => (p, false),
                    None => (self.next_overflowed()?, true),
                }
            };
            if page >= self.background {
                // The cursor has not reached it: the cursor's take (Q2)
                // will send it; its queued bit stays set meanwhile.
                self.tally.deferred += 1;
                continue;
            }
            if self.shared.queued.take(page) {
                if overflowed {
                    self.tally.from_overflow += 1;
                }
                self.tally.cleared += 1;
                return Some(page);
            }
            // Taken since this entry's mark (by the cursor): already sent.
            self.tally.stale += 1;
        }
    }

    fn next_ringed(&mut self) -> Option<u64> {
        if self.ring_next == self.ring_batch.len() {
            self.ring_batch.clear();
            self.ring_next = 0;
            // The ring's A1 pairs with R1 in the marker's enqueue.
            if self.rx.dequeue_burst(&mut self.ring_batch, RING_BATCH) == 0 {
                return None;
            }
        }
        let p = self.ring_batch[self.ring_next];
        self.ring_next += 1;
        Some(p.get() as u64 - 1)
    }

    fn next_overflowed(&mut self) -> Option<u64> {
        if self.batch_bits == 0 {
            if !self.shared.overflow.maybe_nonempty() {
                return None;
            }
            (self.batch_base, self.batch_bits) = self.shared.overflow.take_word()?;
        }
        let bit = self.batch_bits.trailing_zeros();
        self.batch_bits &= self.batch_bits - 1;
        Some(self.batch_base + u64::from(bit))
    }

    /// Pages still to send: queued plus background remaining, for the
    /// switch-over decision. Exact when no mark runs concurrently and the
    /// first pass is over; before that a queued page the cursor has not
    /// reached yet counts twice (an upper bound).
    pub fn pending(&self) -> u64 {
        let s = self.stats();
        s.queued + s.background_remaining
    }

    /// A snapshot of the counters (the taker's own exact, the marks'
    /// a snapshot).
    pub fn stats(&self) -> DirtyStats {
        let l = &self.tally;
        let shared = self.shared.stats();
        let m = &self.shared.marks;
        // Relaxed: snapshots of the markers' counters.
        let queued = queued(m.marks.load(Ordering::Relaxed), m.duplicates.load(Ordering::Relaxed), l.cleared);
        DirtyStats {
            queued,
            background_remaining: self.shared.nr_pages - self.background,
            handed_out: l.handed_out,
            from_background: l.from_background,
            from_overflow: l.from_overflow,
            stale: l.stale,
            deferred: l.deferred,
            ..shared
        }
    }

    /// A marking handle for this scheduler.
    pub fn marker(&self) -> DirtyMarker {
        DirtyMarker { shared: self.shared.clone() }
    }
}

impl std::fmt::Debug for DirtyMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyMarker").field("nr_pages", &self.shared.nr_pages).field("stats", &self.stats()).finish()
    }
}

impl std::fmt::Debug for DirtyTaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyTaker")
            .field("background", &self.background)
            .field("since_background", &self.since_background)
            .field("stats", &self.stats())
            .finish()
    }
}
