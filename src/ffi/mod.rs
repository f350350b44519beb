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

pub mod comp;
pub mod decomp;
pub mod dirty;
pub mod reaper;
pub mod ring;
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
pub(crate) fn catch_int(f: impl FnOnce() -> Result<i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => e.to_neg_errno(),
        Err(_) => Error::Internal("panic caught at the C boundary").to_neg_errno(),
    }
}

/// Runs a constructor; on error or panic returns NULL and sets `errno`.
pub(crate) fn catch_ptr<T>(f: impl FnOnce() -> Result<*mut T>) -> *mut T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            set_errno(e.errno());
            std::ptr::null_mut()
        }
        Err(_) => {
            set_errno(libc::EIO);
            std::ptr::null_mut()
        }
    }
}

/// Runs `f`; a panic yields `fallback`. For functions whose return type has
/// no room for an errno (counts, booleans, `void`).
pub(crate) fn catch_or<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}
