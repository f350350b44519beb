//! C ABI of the dirty-page scheduler (`vmig_dirty_*`). Engine: `crate::dirty`.
//!
//! Thread-safety: vmig_dirty_mark(), vmig_dirty_mark_burst(),
//! vmig_dirty_pending() and vmig_dirty_stats() may be called from any
//! number of threads at once (reapers, vCPU threads); vmig_dirty_next()
//! only from one thread at a time (the migration thread).

use std::cell::UnsafeCell;
use std::ptr::NonNull;

use super::handle::{self, box_handle};
use super::{catch_int, catch_or, catch_or_err, catch_ptr};
use crate::dirty::{scheduler, DirtyConfig, DirtyMarker, DirtyTaker};
use crate::error::{Error, Result};

/// Counters of a dirty-page scheduler (vmig_dirty_stats()).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct vmig_dirty_statistics {
    /// Pages marked (accepted by vmig_dirty_mark()/vmig_dirty_mark_burst()).
    pub marks: u64,
    /// Marks of a page already queued, suppressed (it is queued once).
    pub duplicates: u64,
    /// Marks that found the queue full and went to the overflow set.
    pub overflowed: u64,
    /// Pages the first pass (background cursor) has not reached yet.
    pub background_remaining: u64,
    /// Pages handed out by vmig_dirty_next(), all sources.
    pub handed_out: u64,
    /// Of those, pages from the background cursor.
    pub from_background: u64,
    /// Of those, pages found in the overflow set.
    pub from_overflow: u64,
    /// Pages queued now (queue or overflow set), a snapshot.
    pub queued: u64,
    /// Queue entries dropped because the cursor had sent the page since.
    pub stale: u64,
    /// Queue entries left to the cursor, which had not reached the page.
    pub deferred: u64,
    /// K: while the first pass has pages left, at least one pick in every
    /// K goes to it.
    pub background_interval: u32,
}

/// A dirty-page scheduler (opaque): a queue of pages marked dirty and a
/// background cursor over guest RAM, for the migration thread.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_dirty {
    _opaque: [u8; 0],
}

/// What a vmig_dirty handle points at (see `ffi::handle`).
pub(crate) struct DirtyHandle {
    marker: DirtyMarker,
    /// Used only by vmig_dirty_next(), which the contract restricts to one
    /// thread at a time.
    taker: UnsafeCell<DirtyTaker>,
}

// Tag "vmdt".
box_handle!(vmig_dirty, DirtyHandle, 0x766d_6474);

/// # Safety
/// `d` is NULL or a handle from vmig_dirty_new() not yet freed.
unsafe fn dirty<'a>(d: *const vmig_dirty) -> Result<&'a DirtyHandle> {
    // SAFETY: per the caller's contract; only shared access is formed here
    // (the taker is behind an UnsafeCell).
    unsafe { handle::try_ref(d) }
}

/// Creates a scheduler for `nr_pages` guest pages with a queue of
/// `queue_capacity` entries (a power of two, 2..=2^30). Every page starts
/// pending: the first pass sends all of RAM. The background interval K is
/// the default derived in docs/dirty.md (1: the first pass gets every pick
/// until it is over, then queued pages are served).
///
/// Returns the scheduler, or NULL with errno EINVAL (`nr_pages` 0 or too
/// large for this machine, bad `queue_capacity`) or ENOMEM. Free it with
/// vmig_dirty_free().
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_dirty_new(nr_pages: u64, queue_capacity: u32) -> *mut vmig_dirty {
    catch_ptr(|| {
        let (marker, taker) = scheduler(&DirtyConfig::new(nr_pages, queue_capacity)).map_err(|e| {
            e.in_call(|| format!("vmig_dirty_new(nr_pages {nr_pages}, queue_capacity {queue_capacity})"))
        })?;
        Ok(vmig_dirty::new_box(DirtyHandle { marker, taker: UnsafeCell::new(taker) }))
    })
}

/// Frees a scheduler. NULL is a no-op.
///
/// Thread-safety: no other thread may use the scheduler during or after
/// the call.
///
/// # Safety
/// `d` is NULL or a live handle from vmig_dirty_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_free(d: *mut vmig_dirty) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(d) }.map_err(|e| e.in_call(|| format!("vmig_dirty_free({d:p})"))))
}

/// Marks `page` dirty: it will be handed out by vmig_dirty_next() after
/// this call, and what was written to it before the call (by this thread,
/// or by one whose writes happen-before the call) is visible to the
/// migration thread when it takes the page. A page already queued is not
/// queued again. Never blocks: when the queue is full the page goes to an
/// overflow set.
///
/// Returns 0, or -EINVAL (`d` NULL, `page >= nr_pages`).
///
/// Thread-safety: any number of threads at once.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_mark(d: *mut vmig_dirty, page: u64) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_dirty_mark({d:p}, page {page})");
        // SAFETY: per this function's contract.
        let h = unsafe { dirty(d) }.map_err(|e| e.in_call(call))?;
        h.marker.mark(page).map_err(|e| e.in_call(call))?;
        Ok(0)
    })
}

/// Marks `n` pages from `pages`, in order, as vmig_dirty_mark(); stops at
/// the first page `>= nr_pages`.
///
/// Returns how many pages were accepted (0 when `d` is NULL, or `pages`
/// is NULL with `n > 0`).
///
/// Thread-safety: any number of threads at once.
///
/// # Safety
/// `d` is NULL or a live handle; `pages` is NULL or valid for reading `n`
/// values.
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_mark_burst(d: *mut vmig_dirty, pages: *const u64, n: u32) -> u32 {
    catch_or_err(0, || {
        let call = || format!("vmig_dirty_mark_burst({d:p}, pages {pages:p}, n {n})");
        // SAFETY: per this function's contract.
        let h = unsafe { dirty(d) }.map_err(|e| e.in_call(call))?;
        if n == 0 {
            return Ok(0);
        }
        if pages.is_null() {
            return Err(Error::InvalidArgument("pages is NULL").in_call(call));
        }
        // SAFETY: non-NULL and valid for `n` reads per the contract.
        let pages = unsafe { std::slice::from_raw_parts(pages, n as usize) };
        Ok(h.marker.mark_burst(pages) as u32)
    })
}

/// Takes the next page to send into `*page`: queued pages first, but while
/// the first pass has pages left, at least one pick in every K goes to the
/// background cursor (K in vmig_dirty_statistics.background_interval).
/// Read the page only after this returns.
///
/// Returns 1 with `*page` set, 0 when nothing is pending (`*page`
/// untouched), or -EINVAL (`d` or `page` NULL).
///
/// Thread-safety: one thread at a time (the migration thread); marks may
/// run concurrently.
///
/// # Safety
/// `d` is NULL or a live handle; `page` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_next(d: *mut vmig_dirty, page: *mut u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { dirty(d) }?;
        let out = NonNull::new(page).ok_or(Error::InvalidArgument("page is NULL"))?;
        // SAFETY: only one thread at a time calls vmig_dirty_next() (the
        // contract), so this is the only reference to the taker.
        let taker = unsafe { &mut *h.taker.get() };
        match taker.next() {
            Some(p) => {
                // SAFETY: valid for a write per the contract.
                unsafe { out.as_ptr().write(p) };
                Ok(1)
            }
            None => Ok(0),
        }
    })
}

/// Pages still to send: queued + overflowed + not yet reached by the
/// first pass, for the switch-over decision. Exact while no mark runs and
/// once the first pass is over; before that a queued page the cursor has
/// not reached counts twice (an upper bound).
///
/// Returns the count, or 0 when `d` is NULL.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `d` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_pending(d: *const vmig_dirty) -> u64 {
    catch_or(0, || {
        // SAFETY: per this function's contract.
        unsafe { dirty(d) }.map_or(0, |h| h.marker.pending())
    })
}

/// Copies the scheduler's counters (a snapshot) into `*out`.
///
/// Returns 0, or -EINVAL (`d` or `out` NULL).
///
/// Thread-safety: any thread.
///
/// # Safety
/// `d` is NULL or a live handle; `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_dirty_stats(d: *const vmig_dirty, out: *mut vmig_dirty_statistics) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { dirty(d) }?;
        let out = NonNull::new(out).ok_or(Error::InvalidArgument("out is NULL"))?;
        let s = h.marker.stats();
        let c = vmig_dirty_statistics {
            marks: s.marks,
            duplicates: s.duplicates,
            overflowed: s.overflowed,
            background_remaining: s.background_remaining,
            handed_out: s.handed_out,
            from_background: s.from_background,
            from_overflow: s.from_overflow,
            queued: s.queued,
            stale: s.stale,
            deferred: s.deferred,
            background_interval: s.background_interval,
        };
        // SAFETY: valid for a write per the contract.
        unsafe { out.as_ptr().write(c) };
        Ok(0)
    })
}
