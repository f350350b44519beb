//! The ring entry points only the C API needs. A C caller keeps no
//! per-thread state, so each side's cursor (`crate::ring::raw::Cursor`)
//! lives in the ring header (`prod`/`cons_cache`, `cons`/`prod_cache`) and
//! is loaded before and stored back after each call; the typed Rust API
//! (`crate::ring`) keeps its cursors in its handles and calls the
//! algorithm directly.

use std::ptr::NonNull;

use crate::error::Result;
use crate::ring::raw::RawRing;

impl RawRing {
    /// Enqueues one non-NULL item; `Err(Full)` when there is no free slot.
    ///
    /// # Safety
    /// In single-producer mode, no other thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue(&self, item: NonNull<()>) -> Result<()> {
        if self.is_mp() {
            // SAFETY: an MP ring.
            unsafe { self.mp_enqueue(item) }
        } else {
            let before = self.producer_cursor();
            let mut cur = before;
            // SAFETY: forwarded single-producer contract; the cursor is the
            // producer's own, from the ring.
            let r = unsafe { self.sp_enqueue(&mut cur, item) };
            self.save_producer_peer(before, cur);
            r
        }
    }

    /// Enqueues as many of `items` as fit, in order; returns how many.
    ///
    /// # Safety
    /// Every item is non-NULL. In single-producer mode, no other thread
    /// enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue_burst(&self, items: &[*mut ()]) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // SAFETY: forwarded contract; the iterator yields `n` of `items`.
        unsafe { self.enqueue_burst_with(want, |n| items[..n as usize].iter().copied()) }
    }

    /// Claims room for up to `want` items, calls `items(n)` with the number
    /// `n` it got, stores the `n` pointers the returned iterator yields, in
    /// order, and returns `n`. This lets the typed API hand over items only
    /// once it knows how many fit, without staging them.
    ///
    /// # Safety
    /// The iterator yields at least `n` non-NULL pointers, and neither
    /// `items` nor the iterator panics (in MP mode a claimed slot left empty
    /// would stall the consumer for good). In single-producer mode, no other
    /// thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue_burst_with<I>(&self, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        if self.is_mp() {
            // SAFETY: forwarded contract.
            unsafe { self.mp_enqueue_burst_with(want, items) }
        } else {
            let before = self.producer_cursor();
            let mut cur = before;
            // SAFETY: forwarded contract; the cursor is the producer's own.
            let n = unsafe { self.sp_enqueue_burst_with(&mut cur, want, items) };
            self.save_producer_peer(before, cur);
            n
        }
    }

    /// Dequeues one item, or `None` when nothing is ready.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue(&self) -> Option<NonNull<()>> {
        let before = self.consumer_cursor();
        let mut cur = before;
        // SAFETY: forwarded contract; the cursor is the consumer's own.
        let item = unsafe { self.dequeue_one(&mut cur, self.is_mp()) };
        self.save_consumer_peer(before, cur);
        item
    }

    /// Dequeues up to `out.len()` ready items, in order; returns how many.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue_burst(&self, out: &mut [*mut ()]) -> u32 {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut i = 0;
        // SAFETY: forwarded contract; at most `out.len()` items arrive, and
        // the sink cannot panic.
        unsafe {
            self.dequeue_burst_with(want, |p| {
                *out.get_unchecked_mut(i) = p.as_ptr();
                i += 1;
            })
        }
    }

    /// Dequeues up to `max` ready items, oldest first, handing each to
    /// `sink`; returns how many.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer), and
    /// `sink` does not panic (the items it was given would be handed out
    /// again).
    #[inline]
    pub unsafe fn dequeue_burst_with(&self, max: u32, sink: impl FnMut(NonNull<()>)) -> u32 {
        let before = self.consumer_cursor();
        let mut cur = before;
        // SAFETY: forwarded contract; the cursor is the consumer's own.
        let n = unsafe { self.dequeue_with(&mut cur, self.is_mp(), max, sink) };
        self.save_consumer_peer(before, cur);
        n
    }
}
