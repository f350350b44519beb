//! C ABI of the lockless ring (`vmig_ring_*`). Algorithm: `crate::ring::raw`.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::handle::{self, Handle};
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::{Error, Result};
use crate::ring::raw::{self, RawRing};

/// Ring flag for vmig_ring_new()/vmig_ring_init(): several threads may
/// enqueue concurrently (multi-producer). Without it the ring is
/// single-producer. A ring always has a single consumer.
pub const VMIG_RING_MP: u32 = 1;
/// Required alignment of the memory passed to vmig_ring_init(), in bytes.
/// The producer and consumer indices sit on separate 128-byte blocks (the
/// x86-64 adjacent-line prefetcher moves cache lines in pairs).
pub const VMIG_RING_ALIGN: usize = 128;
/// Smallest ring capacity.
pub const VMIG_RING_MIN_CAPACITY: u32 = 2;
/// Largest ring capacity (2^30).
pub const VMIG_RING_MAX_CAPACITY: u32 = 1 << 30;

const _: () = assert!(VMIG_RING_MP == raw::FLAG_MP);
const _: () = assert!(VMIG_RING_ALIGN == raw::RING_ALIGN);
const _: () = assert!(VMIG_RING_MIN_CAPACITY == raw::MIN_CAPACITY);
const _: () = assert!(VMIG_RING_MAX_CAPACITY == raw::MAX_CAPACITY);

/// A bounded lockless ring of non-NULL `void *` items (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_ring {
    _opaque: [u8; 0],
}

// SAFETY: a live ring's memory (from vmig_ring_new or vmig_ring_init) is
// aligned to VMIG_RING_ALIGN and starts with the ring header, whose first
// field is the u32 magic "vmig" (`raw::Header`, repr(C)): written by init,
// cleared by destroy, never written in between. `RawRing::from_handle`
// checks the same magic and keeps the pointer's provenance for `destroy`.
unsafe impl Handle for vmig_ring {
    type Object = RawRing;
    const NULL: &'static str = "vmig_ring handle is NULL";
    const FOREIGN: &'static str = "not an initialised vmig_ring";
    /// `raw::MAGIC`, "vmig" in ASCII.
    const TAG: u32 = 0x766d_6967;
    const ALIGN: usize = VMIG_RING_ALIGN;

    unsafe fn object(p: NonNull<u8>) -> Result<NonNull<RawRing>> {
        // `let else`, not `ok_or`: see `handle::check`.
        // SAFETY: a live ring (contract).
        let Some(r) = (unsafe { RawRing::from_handle(p) }) else {
            return Err(Error::InvalidArgument(Self::FOREIGN));
        };
        Ok(r)
    }

    unsafe fn destroy(p: NonNull<u8>) {
        // SAFETY: a live ring whose ring handle no other thread uses (contract).
        if let Some(r) = unsafe { RawRing::from_handle(p) } {
            // SAFETY: as above; `r` carries the caller's provenance, and the
            // ring handle owns one reference (producer and consumer handles
            // hold the others, `ring_handle.rs`).
            unsafe { RawRing::release_ref(r) };
        }
    }
}

/// The ring behind a handle, for one call; `call` names the call for the
/// message of a rejected handle.
///
/// # Safety
/// `ring` is NULL or points at memory given to vmig_ring_new/vmig_ring_init
/// that is not freed during the call.
unsafe fn ring_ref<'a>(ring: *const vmig_ring, call: impl FnOnce() -> String) -> Result<&'a RawRing> {
    // SAFETY: per this function's contract.
    unsafe { handle::try_ref(ring) }.map_err(|e| e.in_call(call))
}

/// Creates a ring of `capacity` slots (a power of two, 2..=2^30); it holds
/// `capacity` items. `flags` is 0 (single producer) or VMIG_RING_MP.
///
/// Returns the ring, or NULL with errno EINVAL (bad capacity or flags) or
/// ENOMEM. Free it with vmig_ring_free().
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_ring_new(capacity: u32, flags: u32) -> *mut vmig_ring {
    catch_ptr(|| {
        let r = RawRing::alloc(capacity, flags)
            .map_err(|e| e.in_call(|| format!("vmig_ring_new(capacity {capacity}, flags {flags:#x})")))?;
        Ok(r.as_ptr().cast())
    })
}

/// Frees a ring from vmig_ring_new(). Items still in it are not touched
/// (they belong to the caller). For a ring laid out by vmig_ring_init() it
/// only marks the memory uninitialised; the caller frees that memory.
/// NULL is a no-op.
///
/// With producer or consumer handles live (vmig_ring_producer_new(),
/// vmig_ring_consumer_new()), each holds a reference to the ring: the call
/// gives up the ring handle's, and the ring is freed (or marked
/// uninitialised) when the last handle is freed; the handles keep working
/// until then. A second vmig_ring_free() of such a ring is rejected
/// (vmig_last_error() says so).
///
/// Thread-safety: no other thread may use the ring handle during or after
/// the call (its producer and consumer handles may go on being used).
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_free(ring: *mut vmig_ring) {
    catch_or_err((), || {
        if ring.is_null() {
            return Ok(());
        }
        let call = || format!("vmig_ring_free({ring:p})");
        // SAFETY: per this function's contract.
        let r = unsafe { ring_ref(ring, call)? };
        if !super::ring_handle::mark_ring_handle_freed(r) {
            return Err(Error::InvalidArgument("the ring was freed already; its handles keep it alive").in_call(call));
        }
        // SAFETY: per this function's contract (no other use of the ring
        // handle); `handle::free` drops the ring handle's reference.
        unsafe { handle::free(ring) }.map_err(|e| e.in_call(call))
    })
}

/// Bytes of memory vmig_ring_init() needs for a ring of `capacity` slots,
/// or 0 if `capacity` is invalid.
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_ring_memsize(capacity: u32) -> usize {
    raw::memsize(capacity).unwrap_or(0)
}

/// Lays a ring into caller memory `mem` of `size` bytes, aligned to
/// VMIG_RING_ALIGN (mmap'd or shared memory works); the handle is then
/// `(vmig_ring *)mem`. The memory must outlive every use of the ring.
///
/// Returns 0, or -EINVAL for a NULL or misaligned `mem`, `size` below
/// vmig_ring_memsize(capacity), or a bad capacity or flags.
///
/// Thread-safety: no other thread may use `mem` during the call.
///
/// # Safety
/// `mem` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_init(mem: *mut c_void, size: usize, capacity: u32, flags: u32) -> i32 {
    catch_int(|| {
        // SAFETY: `mem` is valid for `size` bytes per this function's contract.
        unsafe { RawRing::init_in(mem.cast(), size, capacity, flags) }.map_err(|e| {
            e.in_call(|| format!("vmig_ring_init(mem {mem:p}, size {size}, capacity {capacity}, flags {flags:#x})"))
        })?;
        Ok(0)
    })
}

/// Enqueues one item.
///
/// Returns 0, -ENOBUFS when the ring is full, or -EINVAL for a NULL ring or
/// a NULL item (NULL marks an empty slot).
///
/// Thread-safety: on a VMIG_RING_MP ring any number of threads may enqueue
/// concurrently; otherwise one thread at a time. Safe to call concurrently
/// with the (single) consumer.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_enqueue(ring: *mut vmig_ring, item: *mut c_void) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_ring_enqueue(ring {ring:p}, item {item:p})");
        // SAFETY: per this function's contract.
        let r = unsafe { ring_ref(ring, call)? };
        let item = NonNull::new(item).ok_or_else(|| Error::InvalidArgument("item is NULL").in_call(call))?;
        // SAFETY: the producer rule is the caller's, as documented.
        unsafe { r.enqueue(item.cast())? };
        Ok(0)
    })
}

/// Dequeues the oldest ready item.
///
/// Returns the item, or NULL when the ring is empty (or `ring` is NULL).
/// On a VMIG_RING_MP ring an item whose producer is still storing it counts
/// as not ready yet; items from one producer come out in the order it
/// enqueued them.
///
/// Thread-safety: one consumer thread at a time; safe concurrently with
/// producers.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_dequeue(ring: *mut vmig_ring) -> *mut c_void {
    catch_or_err(std::ptr::null_mut(), || {
        // SAFETY: per this function's contract.
        let r = unsafe { ring_ref(ring, || format!("vmig_ring_dequeue({ring:p})"))? };
        // SAFETY: single consumer per the documented rule.
        Ok(unsafe { r.dequeue() }.map_or(std::ptr::null_mut(), |p| p.as_ptr().cast()))
    })
}

/// Enqueues as many of `items[0..n)` as fit, in order, as one contiguous
/// block (on an MP ring no other producer's items interleave with them).
///
/// Returns how many were enqueued (0..=n); 0 also for a NULL ring, NULL
/// `items` with n > 0, or a NULL among the items (checked before any is
/// enqueued).
///
/// Thread-safety: as vmig_ring_enqueue().
///
/// # Safety
/// `ring` is NULL or a live ring handle; `items` is NULL or valid for reads
/// of `n` pointers.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_enqueue_burst(ring: *mut vmig_ring, items: *const *mut c_void, n: u32) -> u32 {
    catch_or_err(0, || {
        let call = || format!("vmig_ring_enqueue_burst(ring {ring:p}, items {items:p}, n {n})");
        // SAFETY: per this function's contract.
        let r = unsafe { ring_ref(ring, call)? };
        if n == 0 {
            return Ok(0);
        }
        if items.is_null() {
            return Err(Error::InvalidArgument("items is NULL").in_call(call));
        }
        // SAFETY: `items` is valid for `n` reads per the contract.
        let items = unsafe { std::slice::from_raw_parts(items.cast::<*mut ()>(), n as usize) };
        if items.iter().any(|p| p.is_null()) {
            return Err(Error::InvalidArgument("an item is NULL").in_call(call));
        }
        // SAFETY: the producer rule is the caller's, as documented.
        Ok(unsafe { r.enqueue_burst(items) })
    })
}

/// Dequeues up to `n` ready items into `items[0..n)`, oldest first.
///
/// Returns how many were dequeued; 0 also for a NULL ring or NULL `items`.
///
/// Thread-safety: as vmig_ring_dequeue().
///
/// # Safety
/// `ring` is NULL or a live ring handle; `items` is NULL or valid for writes
/// of `n` pointers.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_dequeue_burst(ring: *mut vmig_ring, items: *mut *mut c_void, n: u32) -> u32 {
    catch_or_err(0, || {
        let call = || format!("vmig_ring_dequeue_burst(ring {ring:p}, items {items:p}, n {n})");
        // SAFETY: per this function's contract.
        let r = unsafe { ring_ref(ring, call)? };
        if n == 0 {
            return Ok(0);
        }
        if items.is_null() {
            return Err(Error::InvalidArgument("items is NULL").in_call(call));
        }
        // SAFETY: `items` is valid for `n` writes per the contract.
        let out = unsafe { std::slice::from_raw_parts_mut(items.cast::<*mut ()>(), n as usize) };
        // SAFETY: single consumer per the documented rule.
        Ok(unsafe { r.dequeue_burst(out) })
    })
}

/// Items in the ring: a snapshot, exact when no other thread is using the
/// ring. On an MP ring it includes items a producer is still storing.
/// 0 for a NULL ring.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_count(ring: *const vmig_ring) -> u32 {
    // SAFETY: per this function's contract.
    catch_or_err(0, || unsafe { ring_ref(ring, || format!("vmig_ring_count({ring:p})")) }.map(|r| r.count()))
}

/// Capacity of the ring (the number of items it holds); 0 for NULL.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_capacity(ring: *const vmig_ring) -> u32 {
    // SAFETY: per this function's contract.
    catch_or_err(0, || unsafe { ring_ref(ring, || format!("vmig_ring_capacity({ring:p})")) }.map(|r| r.capacity()))
}

/// Whether the ring holds no item (a snapshot, see vmig_ring_count()).
/// true for a NULL ring.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_empty(ring: *const vmig_ring) -> bool {
    // SAFETY: per this function's contract.
    catch_or_err(true, || unsafe { ring_ref(ring, || format!("vmig_ring_empty({ring:p})")) }.map(|r| r.count() == 0))
}

/// Whether every slot is taken (a snapshot, see vmig_ring_count()).
/// false for a NULL ring.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `ring` is NULL or a live ring handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_ring_full(ring: *const vmig_ring) -> bool {
    catch_or_err(false, || {
        // SAFETY: per this function's contract.
        unsafe { ring_ref(ring, || format!("vmig_ring_full({ring:p})")) }.map(|r| r.count() == r.capacity())
    })
}
