//! The single-producer index hand-off, the multi-producer CAS claim with
//! its slot hand-off, and the consumer of both (the algorithm and the
//! R/A labels are explained in the parent module's doc).

use std::ptr::{self, NonNull};

use super::layout::{Cursor, RawRing};
use crate::error::{Error, Result};
use crate::sync::Ordering;

/// Backoff after a producer loses the CAS on `prod` to another producer:
/// 1, 2, 4, … `1 << CLAIM_SPIN_LIMIT` spin-loop hints. Retrying at once
/// pulls the contended cache line back before the winner has stored its
/// slot. The limit is crossbeam-utils' `Backoff` spin limit, measured in
/// docs/ring.md ("What changed since the first version"). Under loom one
/// hint (a yield) per retry keeps the models small.
const CLAIM_SPIN_LIMIT: u32 = if cfg!(vmig_loom) { 0 } else { 6 };

struct ClaimBackoff(u32);

impl ClaimBackoff {
    fn new() -> Self {
        ClaimBackoff(0)
    }

    #[inline]
    // Under loom the limit is 0 and the `min` a no-op, on purpose.
    #[cfg_attr(vmig_loom, allow(clippy::unnecessary_min_or_max))]
    fn spin(&mut self) {
        for _ in 0..1u32 << self.0 {
            crate::sync::spin_loop();
        }
        self.0 = (self.0 + 1).min(CLAIM_SPIN_LIMIT);
    }
}

/// Free slots given a producer index and a value `cons` had, or `None` when
/// the pair is inconsistent (`head` older than `tail`, or `tail` more than a
/// lap behind `head`): then the caller reloads.
#[inline]
fn free_slots(capacity: u32, head: u32, tail: u32) -> Option<u32> {
    capacity.checked_sub(head.wrapping_sub(tail))
}

impl RawRing {
    // ---- Single producer: the index hand-off (R5/A5, R3/A3) ----

    /// Enqueues one item with the producer's cursor.
    ///
    /// # Safety
    /// SP ring; the caller is its only producer and `cur` is that
    /// producer's cursor (from [`RawRing::producer_cursor`], then only
    /// passed to these `sp_*` functions).
    #[inline]
    pub unsafe fn sp_enqueue(&self, cur: &mut Cursor, item: NonNull<()>) -> Result<()> {
        if self.sp_room(cur, 1) == 0 {
            return Err(Error::Full);
        }
        // Relaxed: R5 in `sp_publish` publishes it.
        self.slot(cur.own).store(item.as_ptr(), Ordering::Relaxed);
        self.sp_publish(cur, 1);
        Ok(())
    }

    /// [`RawRing::enqueue_burst_with`] with the producer's cursor.
    ///
    /// # Safety
    /// As [`RawRing::sp_enqueue`], and the iterator contract of
    /// [`RawRing::enqueue_burst_with`].
    #[inline]
    pub unsafe fn sp_enqueue_burst_with<I>(&self, cur: &mut Cursor, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        let n = self.sp_room(cur, want.min(self.capacity()));
        if n == 0 {
            return 0;
        }
        let mut stored = 0;
        for item in items(n).into_iter().take(n as usize) {
            debug_assert!(!item.is_null(), "NULL item");
            // Relaxed: R5 in `sp_publish` publishes the slots.
            self.slot(cur.own.wrapping_add(stored)).store(item, Ordering::Relaxed);
            stored += 1;
        }
        debug_assert_eq!(stored, n, "enqueue_burst_with: iterator yielded too few items");
        self.sp_publish(cur, n);
        n
    }

    /// Free room for up to `want` items, from the cached `cons`, reloaded
    /// only when it shows too little.
    #[inline]
    pub(super) fn sp_room(&self, cur: &mut Cursor, want: u32) -> u32 {
        let capacity = self.capacity();
        // A cursor from the ring header may hold a `peer` older than a lap
        // (the typed API keeps its cursor in the handle): `free_slots`
        // rejects it and the reload below replaces it.
        let free = free_slots(capacity, cur.own, cur.peer).unwrap_or(0);
        if free >= want {
            return want;
        }
        // A3 (Acquire): pairs with R3 in `consumer_publish`; the consumer is
        // done with the slots below the value loaded.
        cur.peer = self.hdr.cons.cons.load(Ordering::Acquire);
        // `own` is exact and `peer` a value `cons` had: a consistent pair.
        want.min(free_slots(capacity, cur.own, cur.peer).unwrap_or(0))
    }

    #[inline]
    pub(super) fn sp_publish(&self, cur: &mut Cursor, n: u32) {
        cur.own = cur.own.wrapping_add(n);
        // R5 (Release): publishes the slots stored before it; pairs with A5
        // in `sp_ready`.
        self.hdr.prod.prod.store(cur.own, Ordering::Release);
    }

    // ---- Multiple producers: CAS claim, slot hand-off (R1/A1, R3/A3, R4/A4) ----

    /// Enqueues one item on an MP ring.
    ///
    /// # Safety
    /// MP ring.
    #[inline]
    pub(crate) unsafe fn mp_enqueue(&self, item: NonNull<()>) -> Result<()> {
        let (head, n) = self.claim_mp(1);
        if n == 0 {
            return Err(Error::Full);
        }
        // R1 (Release): publishes the item and everything written before
        // it; pairs with A1 in `mp_dequeue`.
        self.slot(head).store(item.as_ptr(), Ordering::Release);
        Ok(())
    }

    /// # Safety
    /// MP ring; the iterator contract of [`RawRing::enqueue_burst_with`].
    #[inline]
    pub(crate) unsafe fn mp_enqueue_burst_with<I>(&self, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        let want = want.min(self.capacity());
        if want == 0 {
            return 0;
        }
        let (head, n) = self.claim_mp(want);
        if n == 0 {
            return 0;
        }
        let mut stored = 0;
        for item in items(n).into_iter().take(n as usize) {
            debug_assert!(!item.is_null(), "NULL item");
            // R1 (Release): as in `mp_enqueue`; pairs with A1.
            self.slot(head.wrapping_add(stored)).store(item, Ordering::Release);
            stored += 1;
        }
        debug_assert_eq!(stored, n, "enqueue_burst_with: iterator yielded too few items");
        n
    }

    /// Claims up to `want` indices by CAS on `prod`.
    #[inline]
    pub(super) fn claim_mp(&self, want: u32) -> (u32, u32) {
        let capacity = self.capacity();
        let side = &self.hdr.prod;
        // Relaxed: only a candidate for the CAS below, which rejects it if
        // another producer moved `prod` meanwhile.
        let mut head = side.prod.load(Ordering::Relaxed);
        let mut backoff = ClaimBackoff::new();
        loop {
            // A4 (Acquire): pairs with R4 below, run by whichever producer
            // refreshed the copy.
            let cached = side.cons_cache.load(Ordering::Acquire);
            let mut free = free_slots(capacity, head, cached);
            if free.is_none_or(|f| f < want) {
                // A3 (Acquire): pairs with R3 in `consumer_publish`; makes
                // the consumer's NULL stores of slots below `tail` visible.
                let tail = self.hdr.cons.cons.load(Ordering::Acquire);
                if tail != cached {
                    // R4 (Release): passes A3 on to producers that use this
                    // copy; pairs with A4. Racing producers may store an
                    // older value over a newer one: that only under-states
                    // free room, and `free_slots` rejects a copy more than a
                    // lap behind.
                    side.cons_cache.store(tail, Ordering::Release);
                }
                free = free_slots(capacity, head, tail);
            }
            let n = match free {
                // Full even by a possibly stale `head` (which can only
                // under-state what is claimed): really full when `tail` was read.
                Some(0) => return (head, 0),
                Some(free) => want.min(free),
                // Inconsistent pair: `head` is older than `tail` (another
                // producer moved `prod`), or `tail` is more than a lap old.
                // The CAS below refreshes `head` (a plain reload could return
                // the same stale value again), and the next round reloads `tail`.
                None => 0,
            };
            // Relaxed: the CAS only hands out distinct indices; the data
            // hand-off is ordered by A3/A4 above and R1/A1 on the slots.
            match side.prod.compare_exchange_weak(head, head.wrapping_add(n), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) if n > 0 => return (head, n),
                Ok(_) => {}
                Err(current) => head = current,
            }
            backoff.spin();
        }
    }

    // ---- The consumer (both modes) ----

    /// Dequeues up to `max` ready items with the consumer's cursor; `mp`
    /// says which hand-off the ring uses (the typed API knows it statically).
    ///
    /// # Safety
    /// The caller is the ring's only consumer, `cur` is the consumer's
    /// cursor (from [`RawRing::consumer_cursor`], then only passed here),
    /// `mp == self.is_mp()`, and `sink` does not panic.
    #[inline]
    pub unsafe fn dequeue_with(&self, cur: &mut Cursor, mp: bool, max: u32, sink: impl FnMut(NonNull<()>)) -> u32 {
        debug_assert_eq!(mp, self.is_mp());
        let max = max.min(self.capacity());
        if max == 0 {
            return 0;
        }
        let n = if mp { self.mp_dequeue(cur.own, max, sink) } else { self.sp_dequeue(cur, max, sink) };
        if n > 0 {
            self.consumer_publish(cur, n);
        }
        n
    }

    /// [`RawRing::dequeue_with`] for one item, without the burst loop (the
    /// single-item call is the hot path of the throughput benchmarks).
    ///
    /// # Safety
    /// As [`RawRing::dequeue_with`].
    #[inline]
    pub unsafe fn dequeue_one(&self, cur: &mut Cursor, mp: bool) -> Option<NonNull<()>> {
        debug_assert_eq!(mp, self.is_mp());
        let slot = self.slot(cur.own);
        let item = if mp {
            // A1 (Acquire): as in `mp_dequeue`; pairs with R1.
            let item = NonNull::new(slot.load(Ordering::Acquire))?;
            // Relaxed: as in `mp_dequeue`; R3 publishes it.
            slot.store(ptr::null_mut(), Ordering::Relaxed);
            item
        } else {
            if self.sp_ready(cur, 1) == 0 {
                return None;
            }
            // Relaxed: as in `sp_dequeue`; A5 made the store visible.
            let item = slot.load(Ordering::Relaxed);
            debug_assert!(!item.is_null(), "SP slot below prod is empty");
            // SAFETY: producers store only non-NULL items.
            unsafe { NonNull::new_unchecked(item) }
        };
        self.consumer_publish(cur, 1);
        Some(item)
    }

    #[inline]
    pub(super) fn consumer_publish(&self, cur: &mut Cursor, n: u32) {
        cur.own = cur.own.wrapping_add(n);
        // R3 (Release): the consumer is done with the slots below `own`
        // (read them, and in MP mode NULLed them); pairs with A3 in
        // `sp_room`/`claim_mp`.
        self.hdr.cons.cons.store(cur.own, Ordering::Release);
    }

    /// Items known ready from the cached `prod`, reloaded only when it
    /// shows fewer than `want`.
    #[inline]
    pub(super) fn sp_ready(&self, cur: &mut Cursor, want: u32) -> u32 {
        let ready = cur.peer.wrapping_sub(cur.own);
        // `ready > capacity`: a `peer` from the ring header older than a lap
        // (see `sp_room`); reload it.
        if ready >= want && ready <= self.capacity() {
            return want;
        }
        // A5 (Acquire): pairs with R5 in `sp_publish`; the slots below the
        // value loaded are stored and visible.
        cur.peer = self.hdr.prod.prod.load(Ordering::Acquire);
        // `peer` is now exact, and the consumer never passes `prod`.
        want.min(cur.peer.wrapping_sub(cur.own))
    }

    #[inline]
    fn sp_dequeue(&self, cur: &mut Cursor, max: u32, mut sink: impl FnMut(NonNull<()>)) -> u32 {
        let n = self.sp_ready(cur, max);
        for i in 0..n {
            // Relaxed: A5 made the store visible; the producer does not
            // overwrite the slot before R3 tells it the slot is free.
            let item = self.slot(cur.own.wrapping_add(i)).load(Ordering::Relaxed);
            debug_assert!(!item.is_null(), "SP slot below prod is empty");
            // SAFETY: producers store only non-NULL items.
            sink(unsafe { NonNull::new_unchecked(item) });
        }
        n
    }

    #[inline]
    fn mp_dequeue(&self, tail: u32, max: u32, mut sink: impl FnMut(NonNull<()>)) -> u32 {
        let mut n = 0;
        while n < max {
            let slot = self.slot(tail.wrapping_add(n));
            // A1 (Acquire): pairs with R1 in `mp_enqueue`/`mp_enqueue_burst_with`.
            let Some(item) = NonNull::new(slot.load(Ordering::Acquire)) else {
                break;
            };
            // Relaxed: R3 in `consumer_publish` publishes the NULL to the
            // producers before they can claim this slot again.
            slot.store(ptr::null_mut(), Ordering::Relaxed);
            sink(item);
            n += 1;
        }
        n
    }
}
