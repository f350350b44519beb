//! The frozen layout behind the C handles' inline fast path
//! (`include/vmig_ring_inline.h`), DPDK's way: `rte_ring`'s enqueue and
//! dequeue are `static inline` functions in its headers working on a
//! `struct rte_ring` whose layout is part of the ABI.
//!
//! A producer or consumer handle on a single-producer ring embeds one
//! [`FastView`]: the side's cursor (its own index, exact, and the cached
//! index of the other side), the mask, and pointers to the index the side
//! publishes, to the other side's index and to the slots. The hand-written
//! header defines the same layout as `struct vmig_ring_fast` and enqueues
//! or dequeues one item on it in the caller's code, rtrb's algorithm: trust
//! the cached peer index, reload the real one (Acquire) only when the copy
//! says full (producer) or empty (consumer). When the reloaded index still
//! says so, or the item pointer is NULL, it calls the out-of-line
//! vmig_ring_producer_enqueue()/vmig_ring_consumer_dequeue(), which work on
//! the very same cursor and report -ENOBUFS/-ENOENT/-EINVAL with
//! `vmig_last_error`. Inline and out-of-line calls on one handle can
//! therefore be mixed freely.
//!
//! The layout is versioned ([`VMIG_RING_FAST_VERSION`]) and checked whole:
//! the header hands vmig_ring_producer_get_fast()/vmig_ring_consumer_get_fast()
//! its own view of the layout (version, `sizeof`, each field's `offsetof`, as
//! compiled into the caller) and gets NULL unless it equals
//! [`FastView::LAYOUT`], so a program built against another library's header
//! falls back to the out-of-line calls instead of writing through a wrong
//! layout. The Rust side pins the layout with compile-time asserts below;
//! `c-tests/test_ring_inline.c` checks a header and library built together
//! agree.
//!
//! Memory ordering: the header's atomics are the Rust side's, labelled as
//! in `crate::ring::raw`: R5 (the producer publishes `prod`, Release) pairs
//! with A5 (the consumer reloads `prod`, Acquire), R3 (the consumer
//! publishes `cons`, Release) with A3 (the producer reloads `cons`,
//! Acquire), and either side of each pair may run inline in C or out of
//! line in Rust; the slot accesses are Relaxed for the same reason as in
//! Rust. The loom models cannot run C, so the Rust path's models stay the
//! proof of the algorithm, and the TSan run of `c-tests/test_ring_inline.c`
//! is the proof of the C side's ordering.

use std::ffi::c_void;
use std::mem::{offset_of, size_of};

use super::catch_ptr;
use super::ring_handle::{consumer_mut, producer_mut, vmig_ring_consumer, vmig_ring_producer};
use crate::error::{Error, Result};
use crate::ring::raw::{Cursor, RawRing};
use crate::sync::{AtomicPtr, AtomicU32};

/// Version of the inline fast path's frozen layout (`struct vmig_ring_fast`
/// in vmig_ring_inline.h); changed with any change of that layout.
pub const VMIG_RING_FAST_VERSION: u32 = 1;

/// A producer handle's inline fast path (opaque here; vmig_ring_inline.h
/// defines it).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_ring_producer_fast {
    _opaque: [u8; 0],
}

/// A consumer handle's inline fast path (opaque here; vmig_ring_inline.h
/// defines it).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_ring_consumer_fast {
    _opaque: [u8; 0],
}

/// `struct vmig_ring_fast` of vmig_ring_inline.h: what a handle's thread
/// reads and writes on the inline fast path. Frozen: any change bumps
/// [`VMIG_RING_FAST_VERSION`] and the asserts below.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct FastView {
    /// [`VMIG_RING_FAST_VERSION`].
    version: u32,
    /// `capacity - 1` (the capacity is a power of two).
    mask: u32,
    /// The side's cursor: `own` exact, `peer` a value the other side's
    /// index had. Written by the handle's thread only, inline or not.
    pub(crate) cur: Cursor,
    /// The index this side publishes: `prod` (producer) or `cons` (consumer).
    index: *const AtomicU32,
    /// The other side's index, which the inline path reloads (Acquire)
    /// when the cached copy says full or empty: `cons` or `prod`.
    peer_index: *const AtomicU32,
    /// The ring's `capacity` slots.
    slots: *const AtomicPtr<()>,
    /// The handle this view belongs to, for the out-of-line fallback; set
    /// when the view is handed out.
    owner: *mut c_void,
}

// Pinned on 64-bit targets (x86-64, aarch64): a change here is a change of
// the frozen layout, which bumps VMIG_RING_FAST_VERSION and vmig_ring_inline.h.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<FastView>() == 48);
    assert!(offset_of!(FastView, version) == 0);
    assert!(offset_of!(FastView, mask) == 4);
    assert!(offset_of!(FastView, cur) + Cursor::OWN_OFFSET == 8);
    assert!(offset_of!(FastView, cur) + Cursor::PEER_OFFSET == 12);
    assert!(offset_of!(FastView, index) == 16);
    assert!(offset_of!(FastView, peer_index) == 24);
    assert!(offset_of!(FastView, slots) == 32);
    assert!(offset_of!(FastView, owner) == 40);
};
// The header's `_Atomic uint32_t *` and `_Atomic(void *) *` point at these
// (same size and alignment as the plain types on every target vmig builds for).
#[cfg(not(vmig_loom))]
const _: () = {
    assert!(size_of::<AtomicU32>() == size_of::<u32>());
    assert!(size_of::<AtomicPtr<()>>() == size_of::<*mut ()>());
};

impl FastView {
    /// What vmig_ring_inline.h's `VMIG_RING_FAST_LAYOUT` must hold, in its
    /// order: the version, the size, then the offset of each field.
    pub(crate) const LAYOUT: [u32; 9] = [
        VMIG_RING_FAST_VERSION,
        size_of::<FastView>() as u32,
        offset_of!(FastView, mask) as u32,
        (offset_of!(FastView, cur) + Cursor::OWN_OFFSET) as u32,
        (offset_of!(FastView, cur) + Cursor::PEER_OFFSET) as u32,
        offset_of!(FastView, index) as u32,
        offset_of!(FastView, peer_index) as u32,
        offset_of!(FastView, slots) as u32,
        offset_of!(FastView, owner) as u32,
    ];

    /// The producer's view of `ring` with cursor `cur`.
    pub(crate) fn producer(ring: &RawRing, cur: Cursor) -> FastView {
        FastView::new(ring, cur, ring.prod_index(), ring.cons_index())
    }

    /// The consumer's view of `ring` with cursor `cur`.
    pub(crate) fn consumer(ring: &RawRing, cur: Cursor) -> FastView {
        FastView::new(ring, cur, ring.cons_index(), ring.prod_index())
    }

    fn new(ring: &RawRing, cur: Cursor, index: &AtomicU32, peer_index: &AtomicU32) -> FastView {
        FastView {
            version: VMIG_RING_FAST_VERSION,
            mask: ring.capacity() - 1,
            cur,
            index,
            peer_index,
            slots: ring.slots_ptr(),
            owner: std::ptr::null_mut(),
        }
    }
}

/// Checks the layout a caller's header describes (`layout[0..n)`) against
/// this library's.
///
/// # Safety
/// `layout` is NULL or valid for reads of `n` values.
unsafe fn check_layout(layout: *const u32, n: u32) -> Result<()> {
    if layout.is_null() {
        return Err(Error::InvalidArgument("layout is NULL"));
    }
    // SAFETY: valid for `n` reads per the contract.
    let theirs = unsafe { std::slice::from_raw_parts(layout, n as usize) };
    if theirs != FastView::LAYOUT {
        return Err(Error::Unsupported(
            "the caller's vmig_ring_inline.h layout (struct vmig_ring_fast is another libvmig version's): \
             use the out-of-line calls",
        ));
    }
    Ok(())
}

/// What both `get_fast` functions do once they hold their handle's state:
/// check the caller's layout and the ring kind, then give `view` with its
/// owner (the handle) set.
///
/// # Safety
/// `layout` is NULL or valid for reads of `n` values.
unsafe fn give_view(view: &mut FastView, mp: bool, owner: *mut c_void, layout: *const u32, n: u32) -> Result<*mut FastView> {
    // SAFETY: per this function's contract.
    unsafe { check_layout(layout, n) }?;
    if mp {
        return Err(Error::InvalidArgument("no inline fast path on a VMIG_RING_MP ring"));
    }
    view.owner = owner;
    Ok(std::ptr::addr_of_mut!(*view))
}

/// Gives the inline fast path of a producer handle (vmig_ring_inline.h);
/// call vmig_ring_producer_fast_view() from that header rather than this.
/// `layout[0..n)` is the header's view of the frozen layout
/// (`VMIG_RING_FAST_LAYOUT`): the version, the size and the field offsets
/// as the caller was compiled.
///
/// Returns the fast path, valid until the handle is freed, or NULL with
/// errno EINVAL (NULL or foreign handle, NULL `layout`, or a VMIG_RING_MP
/// ring, whose producers claim slots by CAS and have no inline path) or
/// EOPNOTSUPP (the header's layout is not this library's: use the
/// out-of-line calls).
///
/// Thread-safety: the handle's thread.
///
/// # Safety
/// `producer` is NULL or a live producer handle; `layout` is NULL or valid
/// for reads of `n` values.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_producer_get_fast(
    producer: *mut vmig_ring_producer,
    layout: *const u32,
    n: u32,
) -> *mut vmig_ring_producer_fast {
    catch_ptr(|| {
        let call = move || format!("vmig_ring_producer_get_fast(producer {producer:p}, layout {layout:p}, n {n})");
        // SAFETY: per this function's contract; the handle's thread.
        let p = unsafe { producer_mut(producer, call)? };
        // SAFETY: per this function's contract.
        let view = unsafe { give_view(&mut p.view, p.mp, producer.cast(), layout, n) };
        view.map(|v| v.cast()).map_err(|e| e.in_call(call))
    })
}

/// Gives the inline fast path of a consumer handle (vmig_ring_inline.h);
/// call vmig_ring_consumer_fast_view() from that header rather than this.
/// As vmig_ring_producer_get_fast(): NULL with errno EINVAL (NULL or foreign
/// handle, NULL `layout`, a VMIG_RING_MP ring) or EOPNOTSUPP (another
/// layout).
///
/// Thread-safety: the handle's thread.
///
/// # Safety
/// `consumer` is NULL or a live consumer handle; `layout` is NULL or valid
/// for reads of `n` values.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_consumer_get_fast(
    consumer: *mut vmig_ring_consumer,
    layout: *const u32,
    n: u32,
) -> *mut vmig_ring_consumer_fast {
    catch_ptr(|| {
        let call = move || format!("vmig_ring_consumer_get_fast(consumer {consumer:p}, layout {layout:p}, n {n})");
        // SAFETY: per this function's contract; the handle's thread.
        let c = unsafe { consumer_mut(consumer, call)? };
        // SAFETY: per this function's contract.
        let view = unsafe { give_view(&mut c.view, c.mp, consumer.cast(), layout, n) };
        view.map(|v| v.cast()).map_err(|e| e.in_call(call))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::ring::{vmig_ring_free, vmig_ring_new, VMIG_RING_MP};
    use crate::ffi::ring_handle::{
        vmig_ring_consumer_free, vmig_ring_consumer_new, vmig_ring_producer_free, vmig_ring_producer_new,
    };

    #[test]
    fn views_only_for_this_layout_and_sp_rings() {
        let layout = FastView::LAYOUT;
        let n = layout.len() as u32;
        for flags in [0, VMIG_RING_MP] {
            let ring = vmig_ring_new(8, flags);
            // SAFETY: live handles of this test's thread, freed once below.
            unsafe {
                let p = vmig_ring_producer_new(ring);
                let c = vmig_ring_consumer_new(ring);
                assert!(!p.is_null() && !c.is_null());
                let pf = vmig_ring_producer_get_fast(p, layout.as_ptr(), n);
                let cf = vmig_ring_consumer_get_fast(c, layout.as_ptr(), n);
                assert_eq!(!pf.is_null(), flags == 0);
                assert_eq!(!cf.is_null(), flags == 0);
                if flags == 0 {
                    let view = &*pf.cast::<FastView>();
                    assert_eq!((view.version, view.mask), (VMIG_RING_FAST_VERSION, 7));
                    assert_eq!(view.owner, p.cast::<c_void>());
                }
                for i in 0..layout.len() {
                    let mut other = layout;
                    other[i] += 8;
                    assert!(vmig_ring_producer_get_fast(p, other.as_ptr(), n).is_null());
                }
                assert!(vmig_ring_consumer_get_fast(c, layout.as_ptr(), n - 1).is_null());
                assert!(vmig_ring_consumer_get_fast(c, std::ptr::null(), n).is_null());
                vmig_ring_producer_free(p);
                vmig_ring_consumer_free(c);
                vmig_ring_free(ring);
            }
        }
    }
}
