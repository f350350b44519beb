//! Per-thread producer and consumer handles for the C ring
//! (`vmig_ring_producer_*`, `vmig_ring_consumer_*`): what the typed Rust
//! API (`crate::ring`) has, for C callers.
//!
//! rtrb's design: a handle is owned by one thread and keeps its side's
//! cursor ([`Cursor`]: its own index, exact, and a cached copy of the other
//! side's) in its own memory, reloading the shared index only when the
//! cache says full (producer) or empty (consumer). The per-call entry
//! points of `ring.rs` (`vmig_ring_enqueue` ...) keep that cursor in the
//! shared ring header instead and load and store it around every call
//! (`ring_cursor.rs`). SP bursts go through `crate::ring::raw`'s bulk
//! copies (one reservation, at most two copies, one Release publish).
//! On an SP ring each handle's cursor sits in a frozen `repr(C)` layout
//! (`ring_inline.rs`) that `include/vmig_ring_inline.h` enqueues and
//! dequeues single items on inline, in the caller's code.
//!
//! Lifetime: each handle holds a reference to the ring (`RawRing::acquire_ref`),
//! so `vmig_ring_free` with live handles only drops the ring handle's
//! reference and the ring stays usable through its handles until the last
//! one is freed; then it is torn down (R6/A6 in `RawRing::release_ref`).
//! Roles: a ring has one consumer handle at a time, and a single-producer
//! ring one producer handle at a time (`RawRing::claim_role`, R7/A7); a
//! second `_new` fails with `EBUSY`.

use std::ffi::c_void;
use std::ptr::NonNull;

use crossbeam_utils::CachePadded;

use super::handle::{self, box_handle};
use super::ring_inline::FastView;
use super::ring::vmig_ring;
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::{Error, Result};
use crate::ring::raw::{Cursor, RawRing, ROLE_CONSUMER, ROLE_RING_FREED, ROLE_SP_PRODUCER};

/// A producer's handle on a vmig_ring, owned by one thread (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_ring_producer {
    _opaque: [u8; 0],
}

/// The consumer's handle on a vmig_ring, owned by one thread (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_ring_consumer {
    _opaque: [u8; 0],
}

/// A counted reference to a ring, holding `role` (0 for none) while it lives.
#[derive(Debug)]
pub(crate) struct RingRef {
    ring: NonNull<RawRing>,
    role: u32,
}

impl RingRef {
    /// Takes a reference to the ring behind `ring` and, unless 0, the role
    /// `role(ring)` names.
    ///
    /// # Safety
    /// `ring` is NULL or a live ring handle, not freed during the call.
    unsafe fn take(ring: *mut vmig_ring, role: impl FnOnce(&RawRing) -> u32) -> Result<RingRef> {
        // SAFETY: per this function's contract.
        let r: &RawRing = unsafe { handle::try_ref(ring.cast_const())? };
        if r.ring_handle_freed() {
            return Err(Error::InvalidArgument("the ring was freed (vmig_ring_free)"));
        }
        // The handle keeps a pointer with the C pointer's provenance, not
        // one derived from `r`: the teardown writes the header (Miri's
        // Stacked Borrows rejects a write through a shared reference's).
        // SAFETY: `ring` passed the check above, so it is a live ring.
        let ptr = unsafe { RawRing::from_handle(NonNull::new_unchecked(ring.cast())) }
            .ok_or(Error::InvalidArgument("not an initialised vmig_ring"))?;
        let role = role(r);
        r.acquire_ref()?;
        if role != 0 && !r.claim_role(role) {
            // SAFETY: the reference taken above is ours; the ring handle's
            // keeps the ring alive.
            unsafe { RawRing::release_ref(ptr) };
            return Err(Error::InUse(if role == ROLE_CONSUMER {
                "the ring already has a consumer handle"
            } else {
                "the single-producer ring already has a producer handle"
            }));
        }
        Ok(RingRef { ring: ptr, role })
    }

    #[inline]
    fn raw(&self) -> &RawRing {
        // SAFETY: the reference this value holds keeps the ring live.
        unsafe { self.ring.as_ref() }
    }
}

impl Drop for RingRef {
    fn drop(&mut self) {
        if self.role != 0 {
            self.raw().release_role(self.role);
        }
        // SAFETY: this value owns one reference and is dropped once.
        unsafe { RawRing::release_ref(self.ring) };
    }
}

/// What a producer handle owns: its ring reference and, on an SP ring,
/// the producer's cursor. Cache-padded: a handle is written on every call
/// and must not share a line with the consumer's handle (the allocator
/// may place the two next to each other).
#[derive(Debug)]
pub(crate) struct ProducerState {
    ring: RingRef,
    /// SP rings: the cursor (`own` = `prod`, exact; `peer` = a value `cons`
    /// had) inside the frozen layout the header's inline fast path uses
    /// (`ring_inline.rs`), so inline and out-of-line calls share it.
    pub(super) view: FastView,
    pub(super) mp: bool,
}

/// What a consumer handle owns: its ring reference and the consumer's cursor.
#[derive(Debug)]
pub(crate) struct ConsumerState {
    ring: RingRef,
    /// `own` = `cons` (exact); SP rings: `peer` = a value `prod` had. In
    /// the frozen layout of the inline fast path, as the producer's.
    pub(super) view: FastView,
    pub(super) mp: bool,
}

// "vmpr" and "vmco" in ASCII.
box_handle!(vmig_ring_producer, CachePadded<ProducerState>, 0x766d_7072);
box_handle!(vmig_ring_consumer, CachePadded<ConsumerState>, 0x766d_636f);

/// Creates a producer handle on `ring`, for one thread's enqueues. It keeps
/// the producer's index and a cached copy of the consumer's in its own
/// memory (rtrb's design) and reloads the shared one only when the cache
/// says the ring is full, so an enqueue touches the ring's shared memory
/// only at the slot and the index it publishes. On a VMIG_RING_MP ring
/// every producing thread makes its own handle; on a single-producer ring
/// there is one producer handle at a time.
///
/// The handle holds a reference to the ring: vmig_ring_free() with live
/// handles leaves the ring to them, and the ring is torn down when the last
/// handle is freed. A ring in caller memory (vmig_ring_init()) must stay
/// mapped until its last handle is freed.
///
/// Returns the handle, or NULL with errno EINVAL (NULL or not a live ring,
/// or a ring already given to vmig_ring_free()), EBUSY (a single-producer
/// ring whose producer handle is live) or ENOMEM. Free it with
/// vmig_ring_producer_free().
///
/// Thread-safety: may be called from any thread; the handle is then used by
/// one thread at a time (using it from two threads at once is not allowed;
/// hand it over with a synchronising operation, e.g. a mutex or a thread
/// join). On a single-producer ring, the handle's thread is the ring's
/// producer: no vmig_ring_enqueue*() on that ring while the handle lives.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_new(ring: *mut vmig_ring) -> *mut vmig_ring_producer {
    catch_ptr(|| {
        // SAFETY: per this function's contract.
        let ring_ref = unsafe { RingRef::take(ring, |r| if r.is_mp() { 0 } else { ROLE_SP_PRODUCER }) }
            .map_err(|e| e.in_call(|| format!("vmig_ring_producer_new({ring:p})")))?;
        let mp = ring_ref.raw().is_mp();
        // MP producers claim by CAS on the shared `prod` and use no cursor.
        let cur = if mp { Cursor::default() } else { ring_ref.raw().fresh_producer_cursor() };
        let view = FastView::producer(ring_ref.raw(), cur);
        Ok(vmig_ring_producer::new_box(CachePadded::new(ProducerState { ring: ring_ref, view, mp })))
    })
}

/// Frees a producer handle; its reference to the ring goes with it (the
/// last reference frees the ring, see vmig_ring_producer_new()). Items it
/// enqueued stay in the ring. NULL is a no-op.
///
/// Thread-safety: no other thread may use the handle during or after the call.
///
/// # Safety
/// `producer` is NULL or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_free(producer: *mut vmig_ring_producer) {
    catch_or_err((), || {
        // SAFETY: per this function's contract (exclusive use of a live handle).
        unsafe { handle::free(producer) }.map_err(|e| e.in_call(|| format!("vmig_ring_producer_free({producer:p})")))
    })
}

/// The state behind a producer handle, for one call.
///
/// # Safety
/// `p` is NULL or a live producer handle used by this thread only.
#[inline]
pub(super) unsafe fn producer_mut<'a>(p: *mut vmig_ring_producer, call: impl FnOnce() -> String) -> Result<&'a mut ProducerState> {
    // SAFETY: per this function's contract.
    unsafe { handle::try_mut(p) }.map(|s| &mut **s).map_err(|e| e.in_call(call))
}

/// The state behind a consumer handle, for one call.
///
/// # Safety
/// `c` is NULL or a live consumer handle used by this thread only.
#[inline]
pub(super) unsafe fn consumer_mut<'a>(c: *mut vmig_ring_consumer, call: impl FnOnce() -> String) -> Result<&'a mut ConsumerState> {
    // SAFETY: per this function's contract.
    unsafe { handle::try_mut(c) }.map(|s| &mut **s).map_err(|e| e.in_call(call))
}

/// Enqueues one item through a producer handle.
///
/// Returns 0, -ENOBUFS when the ring is full, or -EINVAL for a NULL or
/// foreign handle or a NULL item (NULL marks an empty slot).
///
/// Thread-safety: one thread at a time per handle (see
/// vmig_ring_producer_new()); concurrent with the consumer and, on a
/// VMIG_RING_MP ring, with other producers.
///
/// # Safety
/// `producer` is NULL or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_enqueue(producer: *mut vmig_ring_producer, item: *mut c_void) -> i32 {
    catch_int(|| {
        // `move`: the message closures copy the arguments, so the fast
        // path does not spill them to the stack for the error path.
        let call = move || format!("vmig_ring_producer_enqueue(producer {producer:p}, item {item:p})");
        // SAFETY: per this function's contract; one thread per handle.
        let p = unsafe { producer_mut(producer, call)? };
        let item = NonNull::new(item).ok_or_else(|| Error::InvalidArgument("item is NULL").in_call(call))?;
        let r = p.ring.raw();
        if p.mp {
            // SAFETY: an MP ring allows concurrent enqueues.
            unsafe { r.mp_enqueue(item.cast())? };
        } else {
            // SAFETY: the SP role makes this handle the only producer; `cur`
            // is its cursor.
            unsafe { r.sp_enqueue(&mut p.view.cur, item.cast())? };
        }
        Ok(0)
    })
}

/// Enqueues as many of `items[0..n)` as fit, in order, as one contiguous
/// block (on a VMIG_RING_MP ring no other producer's items interleave with
/// them). On a single-producer ring this is one reservation, one copy of
/// the pointers (two where the ring wraps) and one publish.
///
/// Returns how many were enqueued (0..=n, 0 when the ring is full), or
/// -EINVAL for a NULL or foreign handle, NULL `items` with n > 0, or a NULL
/// among the items (checked before any is enqueued).
///
/// Thread-safety: as vmig_ring_producer_enqueue().
///
/// # Safety
/// `producer` is NULL or a live producer handle; `items` is NULL or valid
/// for reads of `n` pointers.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_enqueue_burst(
    producer: *mut vmig_ring_producer,
    items: *const *mut c_void,
    n: u32,
) -> i32 {
    catch_int(|| {
        let call = move || format!("vmig_ring_producer_enqueue_burst(producer {producer:p}, items {items:p}, n {n})");
        // SAFETY: per this function's contract; one thread per handle.
        let p = unsafe { producer_mut(producer, call)? };
        if n == 0 {
            return Ok(0);
        }
        if items.is_null() {
            return Err(Error::InvalidArgument("items is NULL").in_call(call));
        }
        // At most a ring's worth can move: check and copy no more.
        let n = n.min(p.ring.raw().capacity());
        // SAFETY: `items` is valid for `n` reads per the contract.
        let items = unsafe { std::slice::from_raw_parts(items.cast::<*mut ()>(), n as usize) };
        if items.iter().any(|i| i.is_null()) {
            return Err(Error::InvalidArgument("an item is NULL").in_call(call));
        }
        let r = p.ring.raw();
        let moved = if p.mp {
            // SAFETY: an MP ring allows concurrent enqueues; the iterator
            // yields `k <= n` non-NULL items and cannot panic.
            unsafe { r.mp_enqueue_burst_with(n, |k| items[..k as usize].iter().copied()) }
        } else {
            // SAFETY: the only producer, its cursor; the items are non-NULL.
            unsafe { r.sp_enqueue_copy(&mut p.view.cur, items) }
        };
        // At most the capacity (2^30): fits.
        Ok(moved as i32)
    })
}

/// Creates the consumer handle of `ring`, for one thread's dequeues. It
/// keeps the consumer's index and, on a single-producer ring, a cached copy
/// of the producer's in its own memory (rtrb's design), reloading the shared
/// one only when the cache says the ring is empty. A ring has one consumer
/// handle at a time.
///
/// The handle holds a reference to the ring, as a producer handle does
/// (see vmig_ring_producer_new()).
///
/// Returns the handle, or NULL with errno EINVAL (NULL or not a live ring,
/// or a ring already given to vmig_ring_free()), EBUSY (the ring's consumer
/// handle is live) or ENOMEM. Free it with vmig_ring_consumer_free().
///
/// Thread-safety: may be called from any thread; the handle is then used by
/// one thread at a time (using it from two threads at once is not allowed).
/// The handle's thread is the ring's consumer: no vmig_ring_dequeue*() on
/// that ring while the handle lives.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_new(ring: *mut vmig_ring) -> *mut vmig_ring_consumer {
    catch_ptr(|| {
        // SAFETY: per this function's contract.
        let ring_ref = unsafe { RingRef::take(ring, |_| ROLE_CONSUMER) }
            .map_err(|e| e.in_call(|| format!("vmig_ring_consumer_new({ring:p})")))?;
        let view = FastView::consumer(ring_ref.raw(), ring_ref.raw().fresh_consumer_cursor());
        let mp = ring_ref.raw().is_mp();
        Ok(vmig_ring_consumer::new_box(CachePadded::new(ConsumerState { ring: ring_ref, view, mp })))
    })
}

/// Frees the consumer handle; its reference to the ring goes with it (the
/// last reference frees the ring). Items still queued stay in the ring.
/// NULL is a no-op.
///
/// Thread-safety: no other thread may use the handle during or after the call.
///
/// # Safety
/// `consumer` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_free(consumer: *mut vmig_ring_consumer) {
    catch_or_err((), || {
        // SAFETY: per this function's contract (exclusive use of a live handle).
        unsafe { handle::free(consumer) }.map_err(|e| e.in_call(|| format!("vmig_ring_consumer_free({consumer:p})")))
    })
}

/// Dequeues the oldest ready item into `*item`.
///
/// Returns 0 (and `*item` holds the item), -ENOENT when nothing is ready
/// (`*item` untouched), or -EINVAL for a NULL or foreign handle or a NULL
/// `item`. On a VMIG_RING_MP ring an item whose producer is still storing
/// it counts as not ready yet; items from one producer come out in the
/// order it enqueued them.
///
/// Thread-safety: one thread at a time (the ring's consumer); concurrent
/// with the producers.
///
/// # Safety
/// `consumer` is NULL or a live consumer handle; `item` is NULL or valid
/// for a write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_dequeue(consumer: *mut vmig_ring_consumer, item: *mut *mut c_void) -> i32 {
    catch_int(|| {
        let call = move || format!("vmig_ring_consumer_dequeue(consumer {consumer:p}, item {item:p})");
        // SAFETY: per this function's contract; one thread per handle.
        let c = unsafe { consumer_mut(consumer, call)? };
        if item.is_null() {
            return Err(Error::InvalidArgument("item is NULL").in_call(call));
        }
        // SAFETY: the consumer role makes this handle the only consumer;
        // `cur` is its cursor and `mp` the ring's mode.
        let Some(got) = (unsafe { c.ring.raw().dequeue_one(&mut c.view.cur, c.mp) }) else {
            return Err(Error::Empty);
        };
        // SAFETY: `item` is valid for one write per the contract.
        unsafe { item.write(got.as_ptr().cast()) };
        Ok(0)
    })
}

/// Dequeues up to `n` ready items into `items[0..n)`, oldest first. On a
/// single-producer ring this is one check, one copy of the pointers (two
/// where the ring wraps) and one publish.
///
/// Returns how many were dequeued (0 when nothing is ready), or -EINVAL for
/// a NULL or foreign handle or NULL `items` with n > 0.
///
/// Thread-safety: as vmig_ring_consumer_dequeue().
///
/// # Safety
/// `consumer` is NULL or a live consumer handle; `items` is NULL or valid
/// for writes of `n` pointers.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_dequeue_burst(
    consumer: *mut vmig_ring_consumer,
    items: *mut *mut c_void,
    n: u32,
) -> i32 {
    catch_int(|| {
        let call = move || format!("vmig_ring_consumer_dequeue_burst(consumer {consumer:p}, items {items:p}, n {n})");
        // SAFETY: per this function's contract; one thread per handle.
        let c = unsafe { consumer_mut(consumer, call)? };
        if n == 0 {
            return Ok(0);
        }
        if items.is_null() {
            return Err(Error::InvalidArgument("items is NULL").in_call(call));
        }
        let r = c.ring.raw();
        let n = n.min(r.capacity());
        // SAFETY: `items` is valid for `n` writes per the contract.
        let out = unsafe { std::slice::from_raw_parts_mut(items.cast::<*mut ()>(), n as usize) };
        let got = if c.mp {
            let mut i = 0;
            // SAFETY: the only consumer, its cursor, an MP ring; at most
            // `n` items arrive, and the sink cannot panic.
            unsafe {
                r.dequeue_with(&mut c.view.cur, true, n, |p| {
                    *out.get_unchecked_mut(i) = p.as_ptr();
                    i += 1;
                })
            }
        } else {
            // SAFETY: the only consumer of an SP ring, its cursor.
            unsafe { r.sp_dequeue_copy(&mut c.view.cur, out) }
        };
        // At most the capacity (2^30): fits.
        Ok(got as i32)
    })
}

/// Items in the ring behind a producer handle: a snapshot, as
/// vmig_ring_count(); -EINVAL for a NULL or foreign handle.
///
/// Thread-safety: the handle's thread (the call reads the handle).
///
/// # Safety
/// `producer` is NULL or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_count(producer: *mut vmig_ring_producer) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let p = unsafe { producer_mut(producer, || format!("vmig_ring_producer_count({producer:p})"))? };
        // At most the capacity (2^30): fits.
        Ok(p.ring.raw().count() as i32)
    })
}

/// Items in the ring behind the consumer handle: a snapshot, as
/// vmig_ring_count(); -EINVAL for a NULL or foreign handle.
///
/// Thread-safety: the handle's thread (the call reads the handle).
///
/// # Safety
/// `consumer` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_count(consumer: *mut vmig_ring_consumer) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let c = unsafe { consumer_mut(consumer, || format!("vmig_ring_consumer_count({consumer:p})"))? };
        // At most the capacity (2^30): fits.
        Ok(c.ring.raw().count() as i32)
    })
}

/// Marks the ring handle's reference dropped; `false` if it already was
/// (a second vmig_ring_free() of a ring its handles keep alive).
pub(crate) fn mark_ring_handle_freed(r: &RawRing) -> bool {
    r.claim_role(ROLE_RING_FREED)
}
