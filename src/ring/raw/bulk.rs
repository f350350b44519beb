//! Bulk bursts for callers that hand the ring a slice of pointers (the C
//! API's producer and consumer handles, `src/ffi/ring_handle.rs`): one
//! reservation, the items moved by at most two `memcpy`s (one before the
//! slot array's end, one after it wraps to the start), one Release publish.
//! rtrb's `write_chunk`/`read_chunk` does the same for its slices.
//!
//! Only the single-producer ring copies slots with plain (non-atomic)
//! accesses, and only where no other thread touches them: the producer
//! writes slots in `[prod, prod + n)`, which the consumer does not read
//! until R5/A5 publishes them, and it reaches them only after A3 showed the
//! consumer done with their previous lap (R3); the consumer reads slots in
//! `[cons, cons + n)` after A5, and the producer overwrites none of them
//! before R3. Rust allows non-atomic accesses to an atomic's memory when
//! they race with no other access (the `AtomicPtr::as_ptr` rule). The
//! multi-producer consumer polls slots while producers fill them, so the MP
//! paths keep their per-slot atomic stores and loads (`algorithm.rs`).
//!
//! Under loom the copies are per-slot Relaxed stores and loads of loom's
//! atomics (loom's atomics are not plain words); the protocol, the
//! reservation and the publish are the same code.

use super::layout::{Cursor, RawRing};
#[cfg(vmig_loom)]
use crate::sync::Ordering;

impl RawRing {
    /// Stores `items` into the slots from index `from` on: two copies at
    /// most (before and after the slot array wraps).
    ///
    /// # Safety
    /// No other thread accesses slots `[from, from + items.len())` during
    /// the call (see the module doc), and `items.len() <= capacity`.
    #[inline]
    unsafe fn copy_into_slots(&self, from: u32, items: &[*mut ()]) {
        debug_assert!(items.len() <= self.capacity() as usize);
        #[cfg(not(vmig_loom))]
        // SAFETY: `slots_base` addresses `capacity` slots; `start + first <=
        // capacity` and `items.len() - first <= start`; the slots are ours
        // alone (contract), and `items` is a distinct caller buffer.
        unsafe {
            let start = (from & (self.capacity() - 1)) as usize;
            let first = items.len().min(self.capacity() as usize - start);
            let base = self.slots_base();
            std::ptr::copy_nonoverlapping(items.as_ptr(), base.add(start), first);
            std::ptr::copy_nonoverlapping(items.as_ptr().add(first), base, items.len() - first);
        }
        #[cfg(vmig_loom)]
        for (i, &item) in items.iter().enumerate() {
            // Relaxed: R5 in `sp_publish` publishes the slots (module doc).
            self.slot(from.wrapping_add(i as u32)).store(item, Ordering::Relaxed);
        }
    }

    /// Loads the slots from index `from` on into `out`: two copies at most.
    ///
    /// # Safety
    /// No other thread writes slots `[from, from + out.len())` during the
    /// call, their stores are visible (A5), and `out.len() <= capacity`.
    #[inline]
    unsafe fn copy_from_slots(&self, from: u32, out: &mut [*mut ()]) {
        debug_assert!(out.len() <= self.capacity() as usize);
        #[cfg(not(vmig_loom))]
        // SAFETY: as in `copy_into_slots`, with the slots as the source.
        unsafe {
            let start = (from & (self.capacity() - 1)) as usize;
            let first = out.len().min(self.capacity() as usize - start);
            let base = self.slots_base().cast_const();
            std::ptr::copy_nonoverlapping(base.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), out.len() - first);
        }
        #[cfg(vmig_loom)]
        for (i, item) in out.iter_mut().enumerate() {
            // Relaxed: A5 in `sp_ready` made the stores visible.
            *item = self.slot(from.wrapping_add(i as u32)).load(Ordering::Relaxed);
        }
    }

    /// Enqueues as many of `items` as fit, in order, as one reservation,
    /// one copy (two across the wrap) and one publish; returns how many.
    ///
    /// # Safety
    /// As [`RawRing::sp_enqueue`] (SP ring, its only producer, its cursor),
    /// and every item is non-NULL.
    #[inline]
    pub unsafe fn sp_enqueue_copy(&self, cur: &mut Cursor, items: &[*mut ()]) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX).min(self.capacity());
        let n = self.sp_room(cur, want);
        if n == 0 {
            return 0;
        }
        debug_assert!(items[..n as usize].iter().all(|p| !p.is_null()), "NULL item");
        // SAFETY: `sp_room` gave `[own, own + n)`: free (A3) and not yet
        // published, so no other thread accesses them.
        unsafe { self.copy_into_slots(cur.own, &items[..n as usize]) };
        self.sp_publish(cur, n);
        n
    }

    /// Dequeues up to `out.len()` ready items of an SP ring, oldest first,
    /// as one check, one copy (two across the wrap) and one publish;
    /// returns how many.
    ///
    /// # Safety
    /// SP ring; the caller is its only consumer and `cur` is that
    /// consumer's cursor.
    #[inline]
    pub unsafe fn sp_dequeue_copy(&self, cur: &mut Cursor, out: &mut [*mut ()]) -> u32 {
        debug_assert!(!self.is_mp());
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX).min(self.capacity());
        let n = self.sp_ready(cur, want);
        if n == 0 {
            return 0;
        }
        // SAFETY: `sp_ready` showed `[own, own + n)` published (A5); the
        // producer does not overwrite them before R3 below.
        unsafe { self.copy_from_slots(cur.own, &mut out[..n as usize]) };
        self.consumer_publish(cur, n);
        n
    }
}
