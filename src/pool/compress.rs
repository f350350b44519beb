//! The compression pool: pages in, one zlib stream per page out.
//!
//! Each result is exactly what QEMU 7.2's `qemu_compress_data()`
//! (migration/qemu-file.c) produces: `deflateReset()` then
//! `deflate(Z_FINISH)` into a `compressBound(page_size)` buffer, i.e. one
//! complete RFC 1950 stream that stock zlib's `uncompress()` turns back into
//! the page. zlib-rs may choose different bytes than system zlib at the same
//! level; the wire contract is the stream format, not the bytes.
//!
//! **Ordering guarantee**: results for the same key become ready (and are
//! returned by `poll`/`wait_result`) in submission order, because a key still
//! in flight is always queued on the worker that holds it. Results for
//! different keys may come back in any order. A VMM can therefore drop the
//! per-pass `flush_compressed_data()` that QEMU needed so an old copy of a
//! page could not overtake a newer one: the newer copy of a page is never
//! ready before the older one.

use super::backend::PageCompressor;
use super::config::{compress_bound, CompConfig, PoolOptions, DEFAULT_BACKEND};
use super::job::Slot;
use super::stats::CompStats;
use super::worker::{Engine, Work};
use crate::error::{Error, Result};

/// Payload of one compression slot.
#[derive(Debug)]
pub(crate) struct CompJob {
    /// The caller's page; read once, by the worker, into its own copy.
    page: *const u8,
    opaque: usize,
    /// The zlib stream; capacity `compress_bound(page_size)`, allocated once.
    out: Vec<u8>,
    status: i32,
    zero_page: bool,
}

// SAFETY: `page` is only read, by the one worker that holds the slot, and the
// caller promised (`CompPool::submit`) it stays mapped until the result is
// collected. Everything else in the job is owned data.
unsafe impl Send for CompJob {}

/// One worker's compressor: the backend's per-worker state reused for
/// every page (QEMU keeps one `z_stream` per thread too) and the copy of
/// the page being compressed.
struct CompWork {
    z: PageCompressor,
    copy: Vec<u8>,
}

impl Work for CompWork {
    type Job = CompJob;

    fn run(&mut self, job: &mut CompJob) {
        // SAFETY: the submitter checked `page` non-NULL, and the caller of
        // `CompPool::submit` guarantees `page_size` readable bytes until the
        // result is collected; `copy` is ours and `page_size` long. The
        // guest may write the page meanwhile: volatile word loads
        // (`guest_mem`), and only the copy is inspected.
        unsafe { crate::guest_mem::copy_from_guest(job.page, &mut self.copy) };
        job.out.clear();
        job.zero_page = is_zero(&self.copy);
        if job.zero_page {
            job.status = 0;
            return;
        }
        // Every buffer has compress_bound(page_size) capacity (`new_slot`);
        // an error is a bug: fail the page.
        job.status = match self.z.compress(&self.copy, &mut job.out) {
            Ok(()) => 0,
            Err(_) => -libc::EIO,
        };
    }

    fn fail(job: &mut CompJob) {
        job.out.clear();
        job.zero_page = false;
        job.status = Error::Internal("worker panicked").to_neg_errno();
    }
}

/// QEMU's `buffer_is_zero()`, in the form the compiler vectorises.
fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: any bit pattern is a valid u64.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && tail.iter().all(|&b| b == 0) && words.chunks(8).all(|c| c.iter().fold(0, |a, &w| a | w) == 0)
}

/// A compressed (or zero, or failed) page, owned by the caller until handed
/// back with [`CompPool::release`]. Dropping it instead frees its buffer; the
/// pool then allocates a new one later, off the hot path.
#[derive(Debug)]
pub struct CompResult {
    slot: Box<Slot<CompJob>>,
}

impl CompResult {
    /// The key given to `submit`.
    pub fn key(&self) -> u64 {
        self.slot.key
    }
    /// The opaque value given to `submit`.
    pub fn opaque(&self) -> usize {
        self.slot.job.opaque
    }
    /// The zlib stream, at most `compress_bound(page_size)` bytes (QEMU's
    /// receiver rejects longer ones); empty for a zero page or a failed page.
    pub fn data(&self) -> &[u8] {
        &self.slot.job.out
    }
    /// Whether the page was all zeroes (no data: send it as a zero page).
    pub fn is_zero_page(&self) -> bool {
        self.slot.job.zero_page
    }
    /// `0`, or a negative errno (`-EIO`: the worker failed on this page; send
    /// it uncompressed or fail the migration).
    pub fn status(&self) -> i32 {
        self.slot.job.status
    }
    /// Index of the worker that compressed it.
    pub fn worker(&self) -> u32 {
        self.slot.worker
    }
}

/// The lockless compression pool. See the module docs for the guarantees.
///
/// **Thread-safety**: `Send`, not `Sync`. One thread at a time submits,
/// polls, releases, flushes and reads statistics (the migration thread);
/// the workers are internal.
pub struct CompPool {
    engine: Engine<CompJob>,
    // Boxed on purpose: the boxes themselves travel through the rings.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Slot<CompJob>>>,
    page_size: u32,
    stats: CompStats,
}

impl std::fmt::Debug for CompPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompPool").field("threads", &self.engine.threads()).field("in_flight", &self.engine.in_flight()).finish()
    }
}

fn new_slot(page_size: u32) -> Result<Box<Slot<CompJob>>> {
    let mut out = Vec::new();
    out.try_reserve_exact(compress_bound(page_size)).map_err(|_| Error::OutOfMemory)?;
    Ok(Box::new(Slot {
        key: 0,
        worker: 0,
        job: CompJob { page: std::ptr::null(), opaque: 0, out, status: 0, zero_page: false },
    }))
}

impl CompPool {
    /// Starts `config.threads` workers named `vmig-comp/N`.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// assert_eq!((pool.threads(), pool.page_size()), (1, 4096));
    /// assert!(CompPool::new(&CompConfig { threads: 0, level: 1, page_size: 4096, ring_depth: 0 }).is_err());
    /// ```
    pub fn new(config: &CompConfig) -> Result<CompPool> {
        Self::with_options(config, &PoolOptions::default())
    }

    /// [`new`](Self::new) with options beyond the pool's shape.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, PoolOptions, CompPool};
    /// let cfg = CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 };
    /// let pool = CompPool::with_options(&cfg, &PoolOptions { spin_ns: 0, ..Default::default() }).unwrap();
    /// assert_eq!(pool.threads(), 1);
    /// assert!(CompPool::with_options(&cfg, &PoolOptions { spin_ns: u32::MAX, ..Default::default() }).is_err());
    /// ```
    pub fn with_options(config: &CompConfig, options: &PoolOptions) -> Result<CompPool> {
        let depth = config.validate()?;
        options.validate()?;
        let page_size = config.page_size;
        let level = config.level;
        let backend = options.backend.unwrap_or(DEFAULT_BACKEND);
        let engine = Engine::new(config.threads, depth, options.spin_ns, "vmig-comp", |_| {
            let mut copy = Vec::new();
            copy.try_reserve_exact(page_size as usize).map_err(|_| Error::OutOfMemory)?;
            copy.resize(page_size as usize, 0);
            Ok(CompWork { z: PageCompressor::new(backend, level)?, copy })
        })?;
        let mut free = Vec::new();
        free.try_reserve_exact(engine.max_in_flight()).map_err(|_| Error::OutOfMemory)?;
        for _ in 0..engine.max_in_flight() {
            free.push(new_slot(page_size)?);
        }
        let stats = CompStats { pages_per_worker: vec![0; config.threads as usize], ..Default::default() };
        Ok(CompPool { engine, free, page_size, stats })
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Worker threads.
    pub fn threads(&self) -> u32 {
        self.engine.threads() as u32
    }

    /// Queues one page. The worker copies it before compressing.
    ///
    /// `Err(Busy)` when the page cannot be queued without waiting and `wait`
    /// is false: every worker ring is full, or `key` is still in flight and
    /// the worker holding it is full (the page must not overtake its older
    /// copy; QEMU would send it uncompressed). With `wait`, it spins, then
    /// sleeps until a worker frees a slot. `Err(Busy)` also, whatever `wait`,
    /// when [`max_pending`](Self::max_pending) results are waiting to be
    /// collected: only the caller can collect them.
    ///
    /// # Safety
    /// `page` is valid for reads of `page_size` bytes until this page's
    /// result is returned by `poll`/`wait_result` or the pool is dropped.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let page = vec![0u8; 4096];
    /// // SAFETY: `page` outlives its result (collected below). QEMU's key is
    /// // `block->offset + offset`, page aligned.
    /// unsafe { pool.submit(page.as_ptr(), 0x2000, 7, true) }.unwrap();
    /// let r = pool.wait_result().unwrap();
    /// assert_eq!((r.key(), r.opaque(), r.is_zero_page()), (0x2000, 7, true));
    /// pool.release(r);
    /// ```
    pub unsafe fn submit(&mut self, page: *const u8, key: u64, opaque: usize, wait: bool) -> Result<()> {
        if page.is_null() {
            return Err(Error::InvalidArgument("page is NULL"));
        }
        let mut slot = match self.free.pop() {
            Some(s) => s,
            // Only when the caller keeps results instead of releasing them.
            None => new_slot(self.page_size)?,
        };
        slot.key = key;
        slot.job.page = page;
        slot.job.opaque = opaque;
        match self.engine.submit(slot, wait) {
            Ok(()) => Ok(()),
            Err((e, slot)) => {
                self.free.push(slot);
                Err(e)
            }
        }
    }

    /// Takes a ready result, or `None` when none is ready.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// assert!(pool.poll().is_none(), "nothing submitted");
    /// let page = vec![1u8; 4096];
    /// // SAFETY: `page` outlives its result.
    /// unsafe { pool.submit(page.as_ptr(), 0, 0, true) }.unwrap();
    /// pool.flush().unwrap();
    /// let r = pool.poll().expect("flushed: ready");
    /// pool.release(r);
    /// ```
    pub fn poll(&mut self) -> Option<CompResult> {
        let slot = self.engine.poll()?;
        Some(self.account(slot))
    }

    /// Takes a result, sleeping until one is ready; `None` when nothing is in
    /// flight.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// assert!(pool.wait_result().is_none(), "nothing in flight: does not block");
    /// ```
    pub fn wait_result(&mut self) -> Option<CompResult> {
        let slot = self.engine.wait_one()?;
        Some(self.account(slot))
    }

    fn account(&mut self, slot: Box<Slot<CompJob>>) -> CompResult {
        let s = &mut self.stats;
        s.pages_per_worker[slot.worker as usize] += 1;
        if slot.job.status != 0 {
            s.failed += 1;
        } else if slot.job.zero_page {
            s.zero_pages += 1;
        } else {
            s.pages += 1;
            s.bytes_in += u64::from(self.page_size);
            s.bytes_out += slot.job.out.len() as u64;
        }
        CompResult { slot }
    }

    /// Hands a result's buffer back for reuse.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let page = vec![3u8; 4096];
    /// // SAFETY: `page` outlives its result.
    /// unsafe { pool.submit(page.as_ptr(), 0, 0, true) }.unwrap();
    /// let r = pool.wait_result().unwrap();
    /// let sent = r.data().to_vec(); // e.g. written to the migration stream
    /// pool.release(r);
    /// assert!(!sent.is_empty());
    /// ```
    pub fn release(&mut self, result: CompResult) {
        let mut slot = result.slot;
        slot.job.page = std::ptr::null();
        self.free.push(slot);
    }

    /// Blocks until every submitted page has a result ready.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let pages = vec![vec![5u8; 4096]; 3];
    /// for (i, p) in pages.iter().enumerate() {
    ///     // SAFETY: `pages` outlives the results.
    ///     unsafe { pool.submit(p.as_ptr(), (i * 4096) as u64, i, true) }.unwrap();
    /// }
    /// pool.flush().unwrap();
    /// assert_eq!(std::iter::from_fn(|| pool.poll()).count(), 3);
    /// ```
    pub fn flush(&mut self) -> Result<()> {
        self.engine.flush();
        Ok(())
    }

    /// Pages submitted and not yet returned by `poll`/`wait_result`.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let page = vec![0u8; 4096];
    /// // SAFETY: `page` outlives its result.
    /// unsafe { pool.submit(page.as_ptr(), 0, 0, true) }.unwrap();
    /// assert_eq!(pool.in_flight(), 1);
    /// let r = pool.wait_result().unwrap();
    /// pool.release(r);
    /// assert_eq!(pool.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// Most pages that may be in flight; a submit beyond it is `Busy`.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let page = vec![0u8; 4096];
    /// for _ in 0..pool.max_pending() {
    ///     // SAFETY: `page` outlives the pool.
    ///     unsafe { pool.submit(page.as_ptr(), 0, 0, true) }.unwrap();
    /// }
    /// // SAFETY: as above.
    /// assert_eq!(unsafe { pool.submit(page.as_ptr(), 0, 0, true) }, Err(vmig::Error::Busy), "collect first");
    /// ```
    pub fn max_pending(&self) -> usize {
        self.engine.max_in_flight()
    }

    /// A snapshot of the statistics.
    ///
    /// ```
    /// use vmig::pool::{CompConfig, CompPool};
    /// let mut pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
    /// let page = vec![9u8; 4096];
    /// // SAFETY: `page` outlives its result.
    /// unsafe { pool.submit(page.as_ptr(), 0, 0, true) }.unwrap();
    /// let r = pool.wait_result().unwrap();
    /// pool.release(r);
    /// let s = pool.stats();
    /// assert_eq!(s.pages, 1);
    /// assert!(s.ratio() < 0.1, "a page of one byte value compresses well");
    /// ```
    pub fn stats(&self) -> CompStats {
        let mut s = self.stats.clone();
        s.busy = self.engine.counters.busy;
        s.wakeups = self.engine.counters.wakeups;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress, Status};

    fn inflate(data: &[u8], size: usize) -> Vec<u8> {
        let mut d = Decompress::new(true);
        let mut out = vec![0u8; size];
        assert_eq!(d.decompress(data, &mut out, FlushDecompress::Finish).unwrap(), Status::StreamEnd);
        assert_eq!(d.total_out() as usize, size);
        assert_eq!(d.total_in() as usize, data.len());
        out
    }

    #[test]
    fn round_trip_every_level_and_zero_page() {
        for level in 0..=9 {
            let mut pool = CompPool::new(&CompConfig { threads: 2, level, page_size: 4096, ring_depth: 0 }).unwrap();
            let pages: Vec<Vec<u8>> = (0..8u32)
                .map(|i| (0..4096u32).map(|j| if i == 3 { 0 } else { ((j * (i + 1)) % 251) as u8 }).collect())
                .collect();
            for (i, p) in pages.iter().enumerate() {
                // SAFETY: `p` outlives the pool's use of it (collected below).
                unsafe { pool.submit(p.as_ptr(), i as u64, i * 10, true).unwrap() };
            }
            let mut n = 0;
            while let Some(r) = pool.wait_result() {
                let i = r.key() as usize;
                assert_eq!(r.opaque(), i * 10);
                assert_eq!(r.status(), 0);
                if i == 3 {
                    assert!(r.is_zero_page() && r.data().is_empty());
                } else {
                    assert!(!r.is_zero_page());
                    assert_eq!(inflate(r.data(), 4096), pages[i], "level {level} page {i}");
                }
                pool.release(r);
                n += 1;
            }
            assert_eq!(n, 8);
            let s = pool.stats();
            assert_eq!((s.pages, s.zero_pages, s.failed), (7, 1, 0));
            assert_eq!(s.bytes_in, 7 * 4096);
        }
    }

    #[test]
    fn random_pages_fit_compress_bound_at_every_level() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let page: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for page_size in [512u32, 4096, 65536] {
            for level in 0..=9 {
                let mut pool = CompPool::new(&CompConfig { threads: 1, level, page_size, ring_depth: 0 }).unwrap();
                // SAFETY: `page` outlives the pool.
                unsafe { pool.submit(page.as_ptr(), 0, 0, true).unwrap() };
                let r = pool.wait_result().unwrap();
                assert_eq!(r.status(), 0, "level {level} page {page_size}");
                assert!(r.data().len() <= compress_bound(page_size));
                assert_eq!(inflate(r.data(), page_size as usize), &page[..page_size as usize]);
            }
        }
    }

    #[test]
    fn null_page_rejected() {
        let mut pool = CompPool::new(&CompConfig::default()).unwrap();
        // SAFETY: NULL is rejected before any read.
        assert!(matches!(unsafe { pool.submit(std::ptr::null(), 0, 0, false) }, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 4097];
        assert!(is_zero(&v[1..]));
        v[4096] = 1;
        assert!(!is_zero(&v[1..]));
        v[4096] = 0;
        v[2] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
