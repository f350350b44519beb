//! Compression and decompression pools: the lockless multithread model.
//!
//! The migration thread submits pages round-robin into a small SPSC ring per
//! worker (depth 32 by default); workers publish results on one MPSC done ring
//! that the migration thread drains. Nothing on that path takes a lock; a
//! worker sleeps only when its ring is empty and is woken only if asleep
//! ([`wake`]). See `docs/pool.md` for the API, the guarantees and the
//! benchmark, and [`worker`] for the engine both pools share.
//!
//! ```
//! use vmig::pool::{CompConfig, CompPool};
//! let mut pool = CompPool::new(&CompConfig { threads: 2, level: 1, page_size: 4096, ring_depth: 0 }).unwrap();
//! let page = vec![7u8; 4096];
//! // SAFETY: `page` outlives the pool's use of it: its result is collected below.
//! unsafe { pool.submit(page.as_ptr(), 0x1000, 0, true).unwrap() };
//! let r = pool.wait_result().unwrap();
//! assert_eq!(r.key(), 0x1000);
//! assert!(!r.data().is_empty());
//! pool.release(r);
//! ```

mod backend;
mod compress;
mod config;
mod decompress;
mod handoff;
mod job;
mod stats;
mod tsan;
pub(crate) mod wake;
mod worker;

/// Test hooks for the loom models in `tests/loom_pool.rs` (not an API:
/// only built with `--cfg vmig_loom`): the sleep/wake steps the workers and
/// the submitter run, so the models check the shipped protocol.
#[cfg(vmig_loom)]
pub mod loom_hooks {
    pub use super::handoff::{
        job_queued, next_job, request_shutdown, result_published, sleep_for_space, sleep_unless, wait_result, Waiter,
    };
    pub use super::wake::{Spin, WakeFlag};
}

pub use backend::{Backend, PageCompressor, PageDecompressor};
pub use compress::{CompPool, CompResult};
pub use config::{
    compress_bound, CompConfig, PoolOptions, DEFAULT_BACKEND, DEFAULT_RING_DEPTH, DEFAULT_SPIN_NS, MAX_PAGE_SIZE, MAX_RING_DEPTH,
    MAX_SPIN_NS, MAX_THREADS, MIN_PAGE_SIZE,
};
pub use decompress::DecompPool;
pub use stats::CompStats;
