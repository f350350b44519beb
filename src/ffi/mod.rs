//! The C ABI: a thin layer that validates, converts and calls.
//!
//! # Contract for every exported function
//!
//! * Each pointer argument is NULL or valid for the access its function
//!   describes; pointer/length pairs follow `slice::from_raw_parts`.
//!   NULL where a value is required is rejected with `-EINVAL` (or NULL and
//!   `errno = EINVAL` from constructors), never dereferenced.
//! * Functions return `0` (or a count) on success and a negative errno on
//!   failure, QEMU's convention. Outputs are written only on success.
//! * No panic unwinds into C: every entry point runs inside
//!   [`catch_int`]/[`catch_ptr`]/[`catch_or`], and a caught panic fails the
//!   call with `-EIO` (or NULL with `errno = EIO`). vmig runs inside a VMM
//!   whose guest must survive a failed migration.
//! * Handles are opaque. A handle is freed by its `_free` function;
//!   `_free(NULL)` is a no-op.
//! * A failed call leaves its message for `vmig_last_error()` (per thread);
//!   the wrappers below record every error they return.

pub mod comp;
pub mod decomp;
mod handle;
pub mod last_error;
pub mod postcopy;
pub mod dirty;
pub mod reaper;
pub mod ring;
mod ring_cursor;
pub mod ring_handle;
pub mod ring_inline;
pub mod throttle;
pub mod version;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(value: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot,
    // valid for the life of the thread.
    unsafe { *libc::__errno_location() = value };
}

/// Runs `f` and maps its result to `value` or `-errno`; a panic becomes `-EIO`.
/// Inlined into each entry point: the ring's per-item calls are a few
/// nanoseconds, and a call level with its closure passed through memory
/// is a measurable share of that (docs/ring.md, "C ABI").
#[inline(always)]
pub(crate) fn catch_int(f: impl FnOnce() -> Result<i32>) -> i32 {
    // The error is mapped inside the unwind boundary, so only an `i32`
    // crosses it: a `Result<i32, Error>` passed out through the boundary's
    // memory cost the ring's per-item calls a store-forwarding stall
    // (docs/ring.md, "C ABI").
    catch_unwind(AssertUnwindSafe(|| match f() {
        Ok(v) => v,
        Err(e) => fail(e),
    }))
    .unwrap_or_else(|_| fail(Error::Internal("panic caught at the C boundary")))
}

/// Records `e` for `vmig_last_error()` and returns `-errno`.
pub(crate) fn fail(e: Error) -> i32 {
    let n = e.to_neg_errno();
    last_error::record(e);
    n
}

/// Runs a constructor; on error or panic returns NULL and sets `errno`.
pub(crate) fn catch_ptr<T>(f: impl FnOnce() -> Result<*mut T>) -> *mut T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            // errno last: recording the message must not disturb it.
            let errno = e.errno();
            last_error::record(e);
            set_errno(errno);
            std::ptr::null_mut()
        }
        Err(_) => {
            last_error::record(Error::Internal("panic caught at the C boundary"));
            set_errno(libc::EIO);
            std::ptr::null_mut()
        }
    }
}

/// Runs `f`; a panic yields `fallback`. For functions whose return type has
/// no room for an errno (counts, booleans, `void`).
pub(crate) fn catch_or<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        last_error::record(Error::Internal("panic caught at the C boundary"));
        fallback
    })
}

/// As [`catch_or`] for a function that can fail but has no room for an
/// errno (a count, a pointer, a boolean): an error yields `fallback` and
/// leaves its message for `vmig_last_error()`.
pub(crate) fn catch_or_err<R: Copy>(fallback: R, f: impl FnOnce() -> Result<R>) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            last_error::record(e);
            fallback
        }
        Err(_) => {
            last_error::record(Error::Internal("panic caught at the C boundary"));
            fallback
        }
    }
}
