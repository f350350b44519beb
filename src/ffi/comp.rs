//! C ABI of the compression pool (`vmig_comp_*`). Engine: `crate::pool`.
//!
//! Thread-safety for every function here: a pool handle is driven by one
//! thread at a time (the migration thread). It may move to another thread
//! between calls if the caller orders the hand-over (a mutex or a join).
//! The workers are internal.

use std::collections::HashMap;
use std::ffi::c_void;

use super::handle::{self, box_handle};
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::Error;
use crate::pool::{Backend, CompConfig, CompPool, CompResult, PoolOptions};

/// Most worker threads in a compression pool, and the length of
/// vmig_comp_statistics.pages_per_worker. QEMU's compress-threads goes up
/// to 255.
pub const VMIG_COMP_MAX_THREADS: usize = 256;
/// Default depth of each worker's submission ring (ring_depth = 0).
pub const VMIG_COMP_DEFAULT_RING_DEPTH: u32 = 32;

const _: () = assert!(VMIG_COMP_MAX_THREADS == crate::pool::MAX_THREADS as usize);
const _: () = assert!(VMIG_COMP_DEFAULT_RING_DEPTH == crate::pool::DEFAULT_RING_DEPTH);
/// Default spin budget in nanoseconds (vmig_pool_options.spin_ns); the
/// measurement behind it is in docs/pool.md, "Spin budget".
pub const VMIG_COMP_DEFAULT_SPIN_NS: u32 = 5_000;
/// Largest vmig_pool_options.spin_ns.
pub const VMIG_COMP_MAX_SPIN_NS: u32 = 1_000_000;
const _: () = assert!(VMIG_COMP_DEFAULT_SPIN_NS == crate::pool::DEFAULT_SPIN_NS);
const _: () = assert!(VMIG_COMP_MAX_SPIN_NS == crate::pool::MAX_SPIN_NS);

/// vmig_pool_options.backend: the default (compression: the measured
/// default, see README "Compression"; decompression: zlib-rs, the fastest
/// inflater exactly as strict as the system zlib).
pub const VMIG_POOL_BACKEND_DEFAULT: u32 = 0;
/// vmig_pool_options.backend: zlib-rs (always built).
pub const VMIG_POOL_BACKEND_ZLIB_RS: u32 = 1;
/// vmig_pool_options.backend: libdeflate (cargo feature `libdeflate`).
pub const VMIG_POOL_BACKEND_LIBDEFLATE: u32 = 2;
/// vmig_pool_options.backend: the system zlib (cargo feature `system-zlib`).
pub const VMIG_POOL_BACKEND_ZLIB: u32 = 3;
const _: () = assert!(VMIG_POOL_BACKEND_ZLIB as usize == Backend::ALL.len());

/// Shape of a compression pool.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vmig_comp_config {
    /// Worker threads, 1..=VMIG_COMP_MAX_THREADS.
    pub threads: u32,
    /// zlib level 0..=9, as deflateInit().
    pub level: i32,
    /// Page size in bytes: a power of two in 512..=65536.
    pub page_size: u32,
    /// Depth of each worker's ring: 0 for the default (32), else a power of
    /// two in 2..=1024.
    pub ring_depth: u32,
}

/// Options of a compression or decompression pool beyond its shape, for
/// vmig_comp_pool_new_opts() and vmig_decomp_pool_new_opts(). Fill it
/// with vmig_pool_options_init() first, then change the fields you mean
/// to set, so that fields added later keep their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vmig_pool_options {
    /// Spin budget in nanoseconds, 0..=VMIG_COMP_MAX_SPIN_NS: how long a
    /// worker with an empty ring, or the caller waiting for a result or for
    /// ring space, polls before it sleeps on a futex. Spent only when the
    /// workers and the caller fit on the CPUs; 0 sleeps after a few pause
    /// rounds. Default VMIG_COMP_DEFAULT_SPIN_NS.
    pub spin_ns: u32,
    /// Deflate backend, a VMIG_POOL_BACKEND_* value: out of range is
    /// EINVAL, one this build lacks EOPNOTSUPP. Every backend sends and
    /// accepts the zlib streams stock QEMU does.
    pub backend: u32,
}

impl vmig_pool_options {
    fn from_rust(o: &PoolOptions) -> Self {
        vmig_pool_options { spin_ns: o.spin_ns, backend: Backend::to_c(o.backend) }
    }
    pub(crate) fn to_rust(self) -> crate::Result<PoolOptions> {
        Ok(PoolOptions { spin_ns: self.spin_ns, backend: Backend::from_c(self.backend)? })
    }
}

/// One page's result, filled by vmig_comp_poll()/vmig_comp_wait_result().
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vmig_comp_result {
    /// The key passed to vmig_comp_submit().
    pub key: u64,
    /// The opaque pointer passed to vmig_comp_submit().
    pub opaque: *mut c_void,
    /// One complete zlib stream (RFC 1950) of the page, at most
    /// compressBound(page_size) bytes (the limit QEMU's receiver checks),
    /// valid until vmig_comp_release() or vmig_comp_pool_free(); NULL for a
    /// zero page or a failed page.
    pub data: *const u8,
    /// Bytes at `data` (0 when `data` is NULL).
    pub len: u32,
    /// 0, or -EIO when the worker failed on this page (send it uncompressed).
    pub status: i32,
    /// The page was all zeroes: send it as a zero page, there is no data.
    pub zero_page: bool,
}

/// Compression statistics (vmig_comp_stats()). Named `_statistics` because
/// C does not allow a typedef and a function to share the name
/// `vmig_comp_stats`. Pages are counted when their result is collected.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vmig_comp_statistics {
    /// Pages compressed (zero pages excluded).
    pub pages: u64,
    /// All-zero pages.
    pub zero_pages: u64,
    /// Pages whose worker failed (status -EIO).
    pub failed: u64,
    /// Submissions refused with -EBUSY (QEMU's "compression busy").
    pub busy: u64,
    /// Bytes of compressed pages before compression.
    pub bytes_in: u64,
    /// Bytes of zlib output for those pages.
    pub bytes_out: u64,
    /// Times a submission woke a sleeping worker.
    pub wakeups: u64,
    /// Number of valid entries in `pages_per_worker` (the pool's threads).
    pub threads: u32,
    /// Results collected from each worker.
    pub pages_per_worker: [u64; VMIG_COMP_MAX_THREADS],
}

/// A compression pool (opaque).
///
/// Single-thread rule: one thread at a time (the migration thread) calls
/// every vmig_comp_* function on a pool. The pool's in-flight table (which
/// keeps same-key results in order), its free buffers and its statistics
/// belong to that thread and take no lock; the workers never touch them.
/// Hand a pool to another thread only with your own synchronisation
/// (a mutex or a join) between the calls.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_comp_pool {
    _opaque: [u8; 0],
}

/// What a vmig_comp_pool handle points at (see `ffi::handle`).
pub(crate) struct CompHandle {
    pool: CompPool,
    /// Results handed to C, by data address, until vmig_comp_release().
    /// Capacity reserved for max_pending, so it does not grow in steady state.
    lent: HashMap<usize, CompResult>,
}

// Tag "vmcp".
box_handle!(vmig_comp_pool, CompHandle, 0x766d_6370);

/// Creates a compression pool and starts `config->threads` workers named
/// `vmig-comp/N`, with the default options (vmig_pool_options_init()).
///
/// Returns the pool, or NULL with errno EINVAL (NULL or out-of-range
/// config), ENOMEM, or EAGAIN (a thread could not be started; the ones
/// already started are stopped). Free it with vmig_comp_pool_free().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `config` is NULL or points at a vmig_comp_config.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_pool_new(config: *const vmig_comp_config) -> *mut vmig_comp_pool {
    // SAFETY: NULL or valid, per this function's contract.
    catch_ptr(|| new_pool(unsafe { config.as_ref() }, PoolOptions::default()))
}

/// Fills `*options` with the defaults of every option.
/// Returns 0, or -EINVAL for NULL.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `options` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vmig_pool_options_init(options: *mut vmig_pool_options) -> i32 {
    catch_int(|| {
        // SAFETY: NULL or writable, per this function's contract.
        let out = unsafe { options.as_mut() }
            .ok_or_else(|| Error::InvalidArgument("options is NULL").in_call(|| "vmig_pool_options_init(NULL)".into()))?;
        *out = vmig_pool_options::from_rust(&PoolOptions::default());
        Ok(0)
    })
}

/// vmig_comp_pool_new() with options (start from vmig_pool_options_init()).
///
/// Returns the pool, or NULL with errno EINVAL (NULL or out-of-range
/// config or options), EOPNOTSUPP (a backend this build lacks), ENOMEM,
/// or EAGAIN (a thread could not be started). Free it with
/// vmig_comp_pool_free().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `config` is NULL or points at a vmig_comp_config; `options` is NULL or
/// points at a vmig_pool_options.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_pool_new_opts(
    config: *const vmig_comp_config,
    options: *const vmig_pool_options,
) -> *mut vmig_comp_pool {
    catch_ptr(|| {
        // SAFETY: NULL or valid, per this function's contract.
        let o = unsafe { options.as_ref() }.ok_or_else(|| {
            Error::InvalidArgument("options is NULL").in_call(|| "vmig_comp_pool_new_opts(options NULL)".into())
        })?;
        let opts = o.to_rust().map_err(|e| e.in_call(|| format!("vmig_comp_pool_new_opts(backend {})", o.backend)))?;
        // SAFETY: NULL or valid, per this function's contract.
        new_pool(unsafe { config.as_ref() }, opts)
    })
}

fn new_pool(config: Option<&vmig_comp_config>, options: PoolOptions) -> crate::Result<*mut vmig_comp_pool> {
    let c = config.ok_or(Error::InvalidArgument("config is NULL"))?;
    let pool = CompPool::with_options(
        &CompConfig { threads: c.threads, level: c.level, page_size: c.page_size, ring_depth: c.ring_depth },
        &options,
    )
    .map_err(|e| {
        e.in_call(|| {
            format!(
                "vmig_comp_pool_new(threads {}, level {}, page_size {}, ring_depth {}, {options:?})",
                c.threads, c.level, c.page_size, c.ring_depth
            )
        })
    })?;
    let mut lent = HashMap::new();
    lent.try_reserve(pool.max_pending()).map_err(|_| Error::OutOfMemory)?;
    Ok(vmig_comp_pool::new_box(CompHandle { pool, lent }))
}

/// Stops the workers, joins them and frees the pool, including pages still
/// in flight (not compressed further) and results not yet released. NULL is
/// a no-op. Every `data` pointer of this pool becomes invalid.
///
/// Thread-safety: the driving thread; no call on this pool may follow.
///
/// # Safety
/// `pool` is NULL or a live handle from vmig_comp_pool_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_pool_free(pool: *mut vmig_comp_pool) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(pool) }.map_err(|e| e.in_call(|| format!("vmig_comp_pool_free({pool:p})"))))
}

/// Queues one page for compression. A worker copies the page before
/// compressing it, so the guest may keep writing it; `page` must stay
/// mapped (page_size readable bytes) until its result has been returned by
/// vmig_comp_poll()/vmig_comp_wait_result() or the pool is freed.
///
/// `key` identifies the page (QEMU: the ram_addr). Results for the same key
/// become ready in submission order, so a newer copy of a page never
/// overtakes an older one (no per-pass flush needed).
///
/// Returns 0; -EBUSY when `wait` is false and the page cannot be queued now
/// (every worker ring is full, or `key` is in flight on a worker whose ring
/// is full); -EBUSY also, whatever `wait`, when vmig_comp_max_pending()
/// results await collection; -EINVAL for a NULL pool or page. With `wait`
/// true it spins, then sleeps, until a worker frees a slot.
///
/// Thread-safety: the driving thread only (see the file comment).
///
/// # Safety
/// `pool` is NULL or a live handle; `page` is NULL or readable as above.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_submit(
    pool: *mut vmig_comp_pool,
    page: *const c_void,
    key: u64,
    opaque: *mut c_void,
    wait: bool,
) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_comp_submit(pool {pool:p}, page {page:p}, key {key:#x})");
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_mut(pool) }.map_err(|e| e.in_call(call))?;
        // SAFETY: forwarded: `page` stays readable until its result is returned.
        unsafe { h.pool.submit(page.cast(), key, opaque as usize, wait) }.map_err(|e| e.in_call(call))?;
        Ok(0)
    })
}

fn lend(h: &mut CompHandle, r: CompResult, out: &mut vmig_comp_result) {
    *out = vmig_comp_result {
        key: r.key(),
        opaque: r.opaque() as *mut c_void,
        data: std::ptr::null(),
        len: 0,
        status: r.status(),
        zero_page: r.is_zero_page(),
    };
    if r.data().is_empty() {
        // Nothing to lend: recycle the buffer now; release is then a no-op.
        h.pool.release(r);
    } else {
        out.data = r.data().as_ptr();
        // A stream of one page is at most compressBound(65536) bytes.
        out.len = r.data().len() as u32;
        h.lent.insert(out.data as usize, r);
    }
}

/// Takes one ready result without blocking.
///
/// Returns 1 when `*result` was filled, 0 when no result is ready, -EINVAL
/// for a NULL pool or result. Hand the result back with vmig_comp_release().
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle; `result` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_poll(pool: *mut vmig_comp_pool, result: *mut vmig_comp_result) -> i32 {
    // SAFETY: per this function's contract.
    catch_int(|| unsafe { take_result("vmig_comp_poll", pool, result, CompPool::poll) })
}

/// vmig_comp_poll() and vmig_comp_wait_result(): `next` takes the result.
///
/// # Safety
/// `pool` is NULL or a live handle; `result` is NULL or writable.
unsafe fn take_result(
    name: &str,
    pool: *mut vmig_comp_pool,
    result: *mut vmig_comp_result,
    next: impl FnOnce(&mut CompPool) -> Option<CompResult>,
) -> crate::Result<i32> {
    let call = || format!("{name}(pool {pool:p}, result {result:p})");
    // SAFETY: per this function's contract.
    let h = unsafe { handle::try_mut(pool) }.map_err(|e| e.in_call(call))?;
    // SAFETY: NULL or writable, per this function's contract.
    let out = unsafe { result.as_mut() }.ok_or_else(|| Error::InvalidArgument("result is NULL").in_call(call))?;
    match next(&mut h.pool) {
        Some(r) => {
            lend(h, r, out);
            Ok(1)
        }
        None => Ok(0),
    }
}

/// Takes one result, sleeping until one is ready.
///
/// Returns 1 when `*result` was filled, 0 when nothing is in flight (no
/// result will come), -EINVAL for a NULL pool or result.
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle; `result` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_wait_result(pool: *mut vmig_comp_pool, result: *mut vmig_comp_result) -> i32 {
    // SAFETY: per this function's contract.
    catch_int(|| unsafe { take_result("vmig_comp_wait_result", pool, result, CompPool::wait_result) })
}

/// Hands a result's buffer back to the pool; `result->data` becomes invalid.
/// A result without data (zero or failed page) or a NULL argument is
/// ignored. Releasing a result twice is a caller bug: it is ignored until
/// the buffer is lent to a later result, after which it would release that
/// one (buffers are recycled, so `data` pointers repeat).
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle; `result` is NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_release(pool: *mut vmig_comp_pool, result: *const vmig_comp_result) {
    catch_or_err((), || {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_mut(pool) }
            .map_err(|e| e.in_call(|| format!("vmig_comp_release(pool {pool:p}, result {result:p})")))?;
        // SAFETY: NULL or readable, per this function's contract.
        let Some(res) = (unsafe { result.as_ref() }) else { return Ok(()) };
        if let Some(r) = h.lent.remove(&(res.data as usize)) {
            h.pool.release(r);
        }
        Ok(())
    })
}

/// Blocks until every submitted page has a result ready (collect them with
/// vmig_comp_poll()). Returns 0, or -EINVAL for a NULL pool.
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_flush(pool: *mut vmig_comp_pool) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_mut(pool) }.map_err(|e| e.in_call(|| format!("vmig_comp_flush({pool:p})")))?;
        h.pool.flush()?;
        Ok(0)
    })
}

/// Most pages that may be in flight (submitted, not yet collected); a
/// submission beyond it is -EBUSY. Returns the count, or -EINVAL for a NULL
/// pool.
///
/// Thread-safety: the driving thread only.
///
/// # Safety
/// `pool` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_max_pending(pool: *const vmig_comp_pool) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(pool) }.map_err(|e| e.in_call(|| format!("vmig_comp_max_pending({pool:p})")))?;
        let n = h.pool.max_pending();
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    })
}

/// Fills `*stats` with a snapshot of the pool's counters.
/// Returns 0, or -EINVAL for a NULL argument.
///
/// Thread-safety: the driving thread only (the counters are its own).
///
/// # Safety
/// `pool` is NULL or a live handle; `stats` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn vmig_comp_stats(pool: *const vmig_comp_pool, stats: *mut vmig_comp_statistics) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_comp_stats(pool {pool:p}, stats {stats:p})");
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(pool) }.map_err(|e| e.in_call(call))?;
        // SAFETY: NULL or writable, per this function's contract.
        let out = unsafe { stats.as_mut() }.ok_or_else(|| Error::InvalidArgument("stats is NULL").in_call(call))?;
        let s = h.pool.stats();
        let mut per = [0u64; VMIG_COMP_MAX_THREADS];
        for (dst, src) in per.iter_mut().zip(&s.pages_per_worker) {
            *dst = *src;
        }
        *out = vmig_comp_statistics {
            pages: s.pages,
            zero_pages: s.zero_pages,
            failed: s.failed,
            busy: s.busy,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            wakeups: s.wakeups,
            threads: s.pages_per_worker.len() as u32,
            pages_per_worker: per,
        };
        Ok(0)
    })
}
