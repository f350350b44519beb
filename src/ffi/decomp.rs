//! C ABI of the decompression pool (`vmig_decomp_*`). Engine: `crate::pool`.
//!
//! Thread-safety for every function here: a pool handle is driven by one
//! thread at a time (QEMU's load thread); the workers are internal.

use std::ffi::c_void;

use super::handle::{self, box_handle};
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::Error;
use super::comp::vmig_pool_options;
use crate::pool::DecompPool;

/// A decompression pool (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_decomp_pool {
    _opaque: [u8; 0],
}

// Tag "vmdc"; see `ffi::handle`.
box_handle!(vmig_decomp_pool, DecompPool, 0x766d_6463);

/// Creates a decompression pool with `threads` workers (1..=256) named
/// `vmig-decomp/N`, for pages of `page_size` bytes (a power of two in
/// 512..=65536).
///
/// Returns the pool, or NULL with errno EINVAL, ENOMEM or EAGAIN (a thread
/// could not be started; the ones already started are stopped).
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_decomp_pool_new(threads: u32, page_size: u32) -> *mut vmig_decomp_pool {
    catch_ptr(|| {
        let pool = DecompPool::new(threads, page_size)
            .map_err(|e| e.in_call(|| format!("vmig_decomp_pool_new(threads {threads}, page_size {page_size})")))?;
        Ok(vmig_decomp_pool::new_box(pool))
    })
}

/// vmig_decomp_pool_new() with options (start from
/// vmig_pool_options_init()); backend VMIG_POOL_BACKEND_DEFAULT is zlib-rs,
/// the fastest inflater exactly as strict as the system zlib. Every backend
/// inflates the streams of every backend and of stock QEMU; libdeflate
/// (faster) also accepts some corrupt streams zlib rejects.
///
/// Returns the pool, or NULL with errno EINVAL (out-of-range arguments or
/// options, NULL options), EOPNOTSUPP (a backend this build lacks),
/// ENOMEM or EAGAIN.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `options` is NULL or points at a vmig_pool_options.
#[no_mangle]
pub unsafe extern "C" fn vmig_decomp_pool_new_opts(
    threads: u32,
    page_size: u32,
    options: *const vmig_pool_options,
) -> *mut vmig_decomp_pool {
    catch_ptr(|| {
        let call = || format!("vmig_decomp_pool_new_opts(threads {threads}, page_size {page_size}, options {options:p})");
        // SAFETY: NULL or valid, per this function's contract.
        let o = unsafe { options.as_ref() }.ok_or_else(|| Error::InvalidArgument("options is NULL").in_call(call))?;
        let opts = o.to_rust().map_err(|e| e.in_call(call))?;
        let pool = DecompPool::with_options(threads, page_size, &opts).map_err(|e| e.in_call(call))?;
        Ok(vmig_decomp_pool::new_box(pool))
    })
}

/// Stops and joins the workers and frees the pool. Pages not yet applied
/// are dropped (call vmig_decomp_wait() first to apply them); a page being
/// inflated when this is called is finished first. NULL is a no-op.
///
/// Thread-safety: the driving thread; no call on this pool may follow.
///
/// # Safety
/// `pool` is NULL or a live handle from vmig_decomp_pool_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_decomp_pool_free(pool: *mut vmig_decomp_pool) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(pool) }.map_err(|e| e.in_call(|| format!("vmig_decomp_pool_free({pool:p})"))))
}

/// Queues `len` bytes of zlib stream (copied before returning) to be
/// inflated into `dest`. Submissions for the same `dest` are applied in
/// submission order. Blocks while the chosen worker's ring is full.
///
/// The stream must inflate to exactly page_size bytes; anything else is
/// reported by vmig_decomp_wait() as -EBADMSG, and `dest` is then left
/// untouched. Nothing is ever written outside dest[0..page_size).
///
/// Returns 0; -EINVAL for a NULL pool or dest, or NULL zdata with len > 0;
/// -EBADMSG when `len` exceeds compressBound(page_size) (also reported by
/// the next vmig_decomp_wait()).
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle; `zdata` is readable for `len` bytes;
/// `dest` is writable for page_size bytes and untouched by others until
/// vmig_decomp_wait() returns.
#[no_mangle]
pub unsafe extern "C" fn vmig_decomp_submit(
    pool: *mut vmig_decomp_pool,
    zdata: *const c_void,
    len: u32,
    dest: *mut c_void,
) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_decomp_submit(pool {pool:p}, zdata {zdata:p}, len {len}, dest {dest:p})");
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_mut(pool) }.map_err(|e| e.in_call(call))?;
        let input: &[u8] = if len == 0 {
            &[]
        } else if zdata.is_null() {
            return Err(Error::InvalidArgument("zdata is NULL").in_call(call));
        } else {
            // SAFETY: non-NULL and readable for `len` bytes per the contract.
            unsafe { std::slice::from_raw_parts(zdata.cast::<u8>(), len as usize) }
        };
        // SAFETY: forwarded `dest` contract.
        unsafe { h.submit(input, dest.cast()) }.map_err(|e| e.in_call(call))?;
        Ok(0)
    })
}

/// Blocks until every submitted page is applied.
///
/// Returns 0, or the first error since the previous call (-EBADMSG for a
/// corrupt, truncated, oversized or wrong-length stream; -EIO if a worker
/// failed), which it clears; -EINVAL for a NULL pool.
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_decomp_wait(pool: *mut vmig_decomp_pool) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_mut(pool) }.map_err(|e| e.in_call(|| format!("vmig_decomp_wait({pool:p})")))?;
        h.wait()?;
        Ok(0)
    })
}
