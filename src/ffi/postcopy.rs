//! C ABI of postcopy (`vmig_postcopy_*`). Engine: `crate::postcopy`.
//!
//! Destination (`vmig_postcopy_dest`): register guest RAM, serve faults
//! into page requests (the VMM sends them on its return path), place pages
//! exactly once, fail cleanly. Source (`vmig_postcopy_src`): the urgent
//! queue the return path fills and the sent map every sender claims from.
//! How QEMU-style modes use them: docs/postcopy.md.

use std::ffi::c_void;
use parking_lot::Mutex;

use super::handle::{self, box_handle};
use super::{catch_int, catch_or, catch_or_err, catch_ptr};
use crate::error::{Error, Result};
use crate::postcopy::latency::BUCKETS;
use crate::postcopy::uffd::FAULT_BATCH;
use crate::postcopy::{urgent_queue, Placement, PostcopyDest, SentMap, UrgentReceiver, UrgentSender};

/// Smallest `n` vmig_postcopy_dest_wait_requests() accepts: the most
/// requests one call can return.
pub const VMIG_POSTCOPY_MAX_REQUESTS: u32 = 64;
/// Buckets of vmig_postcopy_latency.buckets: `[0]`, `[1]`, then
/// `[2^(i-1), 2^i)` microseconds for bucket i.
pub const VMIG_POSTCOPY_LATENCY_BUCKETS: usize = 40;

const _: () = assert!(VMIG_POSTCOPY_MAX_REQUESTS as usize == FAULT_BATCH);
const _: () = assert!(VMIG_POSTCOPY_LATENCY_BUCKETS == BUCKETS);

/// Page-request latency (request issued → page placed), microseconds.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vmig_postcopy_latency {
    /// Requests answered (placed after being requested).
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median: the low edge of its bucket.
    pub p50_us: u64,
    /// 99th percentile: the low edge of its bucket.
    pub p99_us: u64,
    /// Samples per bucket; bucket 0 is `[0]`, bucket 1 `[1]`, bucket i
    /// `[2^(i-1), 2^i)`.
    pub buckets: [u64; VMIG_POSTCOPY_LATENCY_BUCKETS],
}

/// Postcopy destination: guest RAM under userfaultfd (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_postcopy_dest {
    _opaque: [u8; 0],
}

/// Postcopy source: urgent queue and sent map (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_postcopy_src {
    _opaque: [u8; 0],
}

/// What a vmig_postcopy_dest handle points at (see `ffi::handle`).
pub(crate) struct DestHandle {
    dest: PostcopyDest,
}

/// What a vmig_postcopy_src handle points at (see `ffi::handle`).
pub(crate) struct SrcHandle {
    sent: SentMap,
    tx: UrgentSender,
    /// The ring has one consumer; the lock makes a second one fail with
    /// -EBUSY instead of corrupting it (uncontended when used as documented).
    rx: Mutex<UrgentReceiver>,
}

// Tags "vmpd" and "vmps".
box_handle!(vmig_postcopy_dest, DestHandle, 0x766d_7064);
box_handle!(vmig_postcopy_src, SrcHandle, 0x766d_7073);

/// # Safety
/// `d` is NULL or a live handle from vmig_postcopy_dest_new().
unsafe fn dest<'a>(d: *const vmig_postcopy_dest) -> Result<&'a PostcopyDest> {
    // SAFETY: per the caller's contract; every method takes `&self` (the
    // engine is thread-safe), so a shared reference is all it needs.
    Ok(&unsafe { handle::try_ref(d) }?.dest)
}

/// # Safety
/// `s` is NULL or a live handle from vmig_postcopy_src_new().
unsafe fn src<'a>(s: *const vmig_postcopy_src) -> Result<&'a SrcHandle> {
    // SAFETY: per the caller's contract; shared access only (the fields are
    // thread-safe).
    unsafe { handle::try_ref(s) }
}

/// Registers guest RAM `[base, base + len)` with a new userfaultfd in
/// missing mode. Every page counts as missing until placed or marked
/// present. Drop pages that are stale first (`madvise(MADV_DONTNEED)`):
/// populated pages stay readable.
///
/// Returns the handle, or NULL with errno EINVAL (NULL, empty or unaligned
/// region, or `page_size` not the host's), EPERM/ENOSYS (userfaultfd not
/// available to this process), or the errno of UFFDIO_REGISTER.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `base` is NULL or the start of an anonymous private (or shmem) mapping of
/// at least `len` bytes that stays mapped until vmig_postcopy_dest_free().
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_new(
    base: *mut c_void,
    len: usize,
    page_size: usize,
) -> *mut vmig_postcopy_dest {
    catch_ptr(|| {
        // SAFETY: per this function's contract.
        let dest = unsafe { PostcopyDest::new(base.cast(), len, page_size) }
            .map_err(|e| e.in_call(|| format!("vmig_postcopy_dest_new(base {base:p}, len {len}, page_size {page_size})")))?;
        Ok(vmig_postcopy_dest::new_box(DestHandle { dest }))
    })
}

/// Closes the userfaultfd (threads still waiting are released as by
/// vmig_postcopy_dest_fail()) and frees the handle. NULL is a no-op.
///
/// Thread-safety: no other call on this handle may run or follow.
///
/// # Safety
/// `d` is NULL or a live handle from vmig_postcopy_dest_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_free(d: *mut vmig_postcopy_dest) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(d) }.map_err(|e| e.in_call(|| format!("vmig_postcopy_dest_free({d:p})"))))
}

/// Records that `page` is already in place (it arrived before the switch).
///
/// Returns 1 if newly marked, 0 if it was already received, or -EINVAL
/// (NULL handle, page out of range).
///
/// Thread-safety: any thread, concurrently with every other dest call.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_mark_present(d: *const vmig_postcopy_dest, page: u64) -> i32 {
    // SAFETY: per this function's contract.
    catch_int(|| Ok(i32::from(unsafe { dest(d)? }.mark_present(page)?)))
}

fn placement(p: Placement) -> i32 {
    match p {
        Placement::Placed => 0,
        Placement::Duplicate => 1,
    }
}

/// Places one page of `data` at `page` with UFFDIO_COPY (atomic: no thread
/// sees it half written) and wakes the threads waiting for it, unless the
/// page was already received.
///
/// Returns 0 (placed), 1 (already received: dropped, nothing written),
/// -EINVAL (NULL handle or data, page out of range, `len` not one page),
/// -ESHUTDOWN after vmig_postcopy_dest_fail(), or the errno of UFFDIO_COPY.
///
/// Thread-safety: any number of threads concurrently (each page is placed
/// once).
///
/// # Safety
/// `d` is NULL or a live handle; `data` is NULL or valid for reads of `len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_place(
    d: *const vmig_postcopy_dest,
    page: u64,
    data: *const u8,
    len: usize,
) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let d = unsafe { dest(d)? };
        if data.is_null() {
            return Err(Error::InvalidArgument("data is NULL"));
        }
        // SAFETY: `data` is valid for `len` bytes per the contract.
        let data = unsafe { std::slice::from_raw_parts(data, len) };
        Ok(placement(d.place(page, data)?))
    })
}

/// As vmig_postcopy_dest_place() for an all-zero page (UFFDIO_ZEROPAGE).
///
/// Thread-safety: as vmig_postcopy_dest_place().
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_place_zero(d: *const vmig_postcopy_dest, page: u64) -> i32 {
    // SAFETY: per this function's contract.
    catch_int(|| Ok(placement(unsafe { dest(d)? }.place_zero(page)?)))
}

/// The fault service: waits up to `timeout_ms` (-1: forever) for faults on
/// the region and writes to `pages[0..n)` each page to request now (not
/// received, not requested before: a page several threads wait for is
/// returned once). Send them on the return path at once: the latency clock
/// starts here.
///
/// Returns how many pages were written (0 on timeout), -EINVAL (NULL
/// handle or `pages`, `n` below VMIG_POSTCOPY_MAX_REQUESTS), -ESHUTDOWN
/// after vmig_postcopy_dest_fail(), or the errno of poll/read.
///
/// Thread-safety: one fault-service thread at a time; concurrent with
/// placement.
///
/// # Safety
/// `d` is NULL or a live handle; `pages` is NULL or valid for writes of `n`
/// values.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_wait_requests(
    d: *const vmig_postcopy_dest,
    timeout_ms: i32,
    pages: *mut u64,
    n: u32,
) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let d = unsafe { dest(d)? };
        if pages.is_null() || n < VMIG_POSTCOPY_MAX_REQUESTS {
            return Err(Error::InvalidArgument("pages must hold VMIG_POSTCOPY_MAX_REQUESTS"));
        }
        let mut v = Vec::with_capacity(FAULT_BATCH);
        d.wait_requests(timeout_ms, &mut v)?;
        // SAFETY: `pages` is valid for n >= v.len() writes per the contract.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), pages, v.len()) };
        Ok(v.len() as i32)
    })
}

/// Pages not yet placed or marked present; 0 means the guest's memory is
/// complete. Returns 0 for a NULL handle too.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_remaining(d: *const vmig_postcopy_dest) -> u64 {
    // SAFETY: per this function's contract.
    catch_or(0, || unsafe { dest(d) }.map_or(0, |d| d.remaining()))
}

/// Fails the migration: unregisters the region, so every thread waiting on
/// a page is released and its access completes on a zero page that is NOT
/// guest memory. Stop the vCPUs: a guest thread must check
/// vmig_postcopy_dest_failed() after each access (true for every access
/// this release completed) and stop. Later placements return -ESHUTDOWN.
/// Idempotent.
///
/// Returns 0 or -EINVAL (NULL handle).
///
/// Thread-safety: any thread.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_fail(d: *const vmig_postcopy_dest) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        unsafe { dest(d)? }.fail();
        Ok(0)
    })
}

/// Whether vmig_postcopy_dest_fail() was called (false for NULL).
///
/// Thread-safety: any thread.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_failed(d: *const vmig_postcopy_dest) -> bool {
    // SAFETY: per this function's contract.
    catch_or(false, || unsafe { dest(d) }.is_ok_and(|d| d.is_failed()))
}

/// Writes the request latency so far to `*out`.
///
/// Returns 0 or -EINVAL (NULL handle or `out`).
///
/// Thread-safety: any thread (a snapshot while placements go on).
///
/// # Safety
/// `d` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_dest_latency(
    d: *const vmig_postcopy_dest,
    out: *mut vmig_postcopy_latency,
) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let d = unsafe { dest(d)? };
        if out.is_null() {
            return Err(Error::InvalidArgument("out is NULL"));
        }
        let s = d.latency();
        let mut buckets = [0u64; VMIG_POSTCOPY_LATENCY_BUCKETS];
        for (lo, _, c) in &s.buckets {
            buckets[crate::postcopy::latency::bucket(*lo)] = *c;
        }
        let v =
            vmig_postcopy_latency { count: s.count, mean_us: s.mean_us, p50_us: s.p50_us, p99_us: s.p99_us, buckets };
        // SAFETY: `out` is valid for a write per the contract.
        unsafe { out.write(v) };
        Ok(0)
    })
}

/// Creates the source side for a guest of `pages` pages: a sent map with
/// every page unsent and an urgent queue of `queue_capacity` requests (a
/// power of two, 2..=2^30).
///
/// Returns the handle, or NULL with errno EINVAL (zero pages, bad
/// capacity) or ENOMEM.
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_postcopy_src_new(pages: u64, queue_capacity: u32) -> *mut vmig_postcopy_src {
    catch_ptr(|| {
        let call = || format!("vmig_postcopy_src_new(pages {pages}, queue_capacity {queue_capacity})");
        if pages == 0 {
            return Err(Error::InvalidArgument("pages is 0").in_call(call));
        }
        let (tx, rx) = urgent_queue(queue_capacity).map_err(|e| e.in_call(call))?;
        let h = SrcHandle { sent: SentMap::new(pages), tx, rx: Mutex::new(rx) };
        Ok(vmig_postcopy_src::new_box(h))
    })
}

/// Frees the source handle; queued requests are dropped. NULL is a no-op.
///
/// Thread-safety: no other call on this handle may run or follow.
///
/// # Safety
/// `s` is NULL or a live handle from vmig_postcopy_src_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_src_free(s: *mut vmig_postcopy_src) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(s) }.map_err(|e| e.in_call(|| format!("vmig_postcopy_src_free({s:p})"))))
}

fn page_in(h: &SrcHandle, page: u64) -> Result<u64> {
    if page < h.sent.pages() {
        Ok(page)
    } else {
        Err(Error::InvalidArgument("page out of range"))
    }
}

/// Queues an urgent request for `page` (from the return path).
///
/// Returns 0, -ENOBUFS (queue full), or -EINVAL (NULL handle, page out of
/// range).
///
/// Thread-safety: any number of threads concurrently.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_src_request(s: *const vmig_postcopy_src, page: u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { src(s)? };
        h.tx.request(page_in(h, page)?)?;
        Ok(0)
    })
}

/// Takes the oldest urgent request into `*page`.
///
/// Returns 1 (a page), 0 (queue empty), -EBUSY (another thread is taking
/// requests right now), or -EINVAL (NULL handle or `page`).
///
/// Thread-safety: one consumer thread (the migration thread); concurrent
/// with vmig_postcopy_src_request().
///
/// # Safety
/// `s` is NULL or a live handle; `page` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_src_next_urgent(s: *const vmig_postcopy_src, page: *mut u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { src(s)? };
        if page.is_null() {
            return Err(Error::InvalidArgument("page is NULL"));
        }
        let rx = h.rx.try_lock().ok_or(Error::Busy)?;
        match rx.next() {
            Some(p) => {
                // SAFETY: valid for a write per the contract.
                unsafe { page.write(p) };
                Ok(1)
            }
            None => Ok(0),
        }
    })
}

/// Claims `page` in the sent map before sending it.
///
/// Returns 1 (the caller must send it now), 0 (already sent or being sent
/// by another thread: skip it), or -EINVAL (NULL handle, page out of
/// range).
///
/// Thread-safety: any number of threads concurrently; exactly one claimer
/// of a page gets 1.
///
/// # Safety
/// `s` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_src_claim(s: *const vmig_postcopy_src, page: u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { src(s)? };
        Ok(i32::from(h.sent.claim(page_in(h, page)?)))
    })
}

/// The first unsent page at or after `from` into `*page` (a hint for the
/// background stream: claim it before sending).
///
/// Returns 1 (found), 0 (every page from `from` on is sent), or -EINVAL
/// (NULL handle or `page`).
///
/// Thread-safety: any thread.
///
/// # Safety
/// `s` is NULL or a live handle; `page` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_postcopy_src_next_unsent(s: *const vmig_postcopy_src, from: u64, page: *mut u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { src(s)? };
        if page.is_null() {
            return Err(Error::InvalidArgument("page is NULL"));
        }
        match h.sent.next_unsent(from) {
            Some(p) => {
                // SAFETY: valid for a write per the contract.
                unsafe { page.write(p) };
                Ok(1)
            }
            None => Ok(0),
        }
    })
}
