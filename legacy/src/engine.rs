//! One trait over the two page-compression engines: vmig's
//! [`CompPool`](vmig::pool::CompPool) and QEMU 7.2's threads replicated in
//! [`LegacyComp`](crate::LegacyComp). Both are driven by one submitting
//! thread in the same shape (submit a page, collect results with `poll` or
//! `wait_result`, hand each result back with `release`), so the pool
//! benchmark and `vmig-sim` each drive them with one loop. The replica
//! implements the trait directly; vmig's pool through the forwarding impl
//! below (its API is vmig's own).
//!
//! ```
//! use vmig_legacy::{CompressEngine, CompressedPage, LegacyComp};
//! use vmig::pool::{CompConfig, CompPool};
//!
//! /// Compresses `page` once and returns the zlib stream's length.
//! fn one_page<E: CompressEngine>(mut e: E, page: &[u8]) -> usize {
//!     // SAFETY: `page` outlives the engine's use of it (wait_result below).
//!     unsafe { e.submit(page.as_ptr(), 0, 0, true) }.unwrap();
//!     let r = e.wait_result().unwrap();
//!     assert_eq!(r.status(), 0);
//!     let n = r.data().len();
//!     e.release(r);
//!     n
//! }
//!
//! let page = vec![7u8; 4096];
//! let cfg = CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 };
//! let vmig = one_page(CompPool::new(&cfg).unwrap(), &page);
//! let legacy = one_page(LegacyComp::new(1, 1, 4096).unwrap(), &page);
//! assert_eq!(vmig, legacy, "same zlib-rs at the same level");
//! ```

use vmig::pool::{CompPool, CompResult, CompStats};
use vmig::Result;


/// One compressed page handed back by a [`CompressEngine`].
pub trait CompressedPage {
    /// The key given to `submit` (QEMU: `block->offset + offset`).
    fn key(&self) -> u64;
    /// The opaque value given to `submit`.
    fn opaque(&self) -> usize;
    /// The zlib stream (empty for a zero page or a failed page).
    fn data(&self) -> &[u8];
    /// Whether the page was all zero (sent as a zero-page record).
    fn is_zero_page(&self) -> bool;
    /// 0, or a negative errno when the worker failed (the page goes raw).
    fn status(&self) -> i32;
}

/// A page-compression engine run by one submitting thread.
pub trait CompressEngine {
    /// What a finished page comes back as.
    type Page: CompressedPage;

    /// Queues `page` for compression. `Err(Error::Busy)` when no worker can
    /// take it now (with `wait`, only while results are uncollected); any
    /// other error is a real failure.
    ///
    /// # Safety
    /// `page` is readable for the engine's page size until its result has
    /// been returned by `poll` or `wait_result`.
    unsafe fn submit(&mut self, page: *const u8, key: u64, opaque: usize, wait: bool) -> Result<()>;
    /// A finished result, if one is ready.
    fn poll(&mut self) -> Option<Self::Page>;
    /// A finished result, waiting for one; `None` when nothing is in flight.
    fn wait_result(&mut self) -> Option<Self::Page>;
    /// Hands a result's buffer back for reuse.
    fn release(&mut self, page: Self::Page);
    /// Waits until every submitted page is finished (results stay queued
    /// for `poll`).
    fn flush(&mut self) -> Result<()>;
    /// The counters so far.
    fn stats(&self) -> CompStats;
    /// Whether results for one key come back in submission order, so a
    /// migration need not flush every thread at the end of each round
    /// (QEMU 7.2 cannot promise it: `flush_compressed_data` in
    /// `find_dirty_block`).
    fn ordered_per_key(&self) -> bool;
}

impl CompressedPage for CompResult {
    fn key(&self) -> u64 {
        CompResult::key(self)
    }
    fn opaque(&self) -> usize {
        CompResult::opaque(self)
    }
    fn data(&self) -> &[u8] {
        CompResult::data(self)
    }
    fn is_zero_page(&self) -> bool {
        CompResult::is_zero_page(self)
    }
    fn status(&self) -> i32 {
        CompResult::status(self)
    }
}

impl CompressEngine for CompPool {
    type Page = CompResult;

    unsafe fn submit(&mut self, page: *const u8, key: u64, opaque: usize, wait: bool) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CompPool::submit(self, page, key, opaque, wait) }
    }
    fn poll(&mut self) -> Option<CompResult> {
        CompPool::poll(self)
    }
    fn wait_result(&mut self) -> Option<CompResult> {
        CompPool::wait_result(self)
    }
    fn release(&mut self, page: CompResult) {
        CompPool::release(self, page)
    }
    fn flush(&mut self) -> Result<()> {
        CompPool::flush(self)
    }
    fn stats(&self) -> CompStats {
        CompPool::stats(self)
    }
    /// vmig's pool hands one key's pages to one worker in order.
    fn ordered_per_key(&self) -> bool {
        true
    }
}
