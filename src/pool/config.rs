//! Pool configuration and its validation.

use super::backend::Backend;
use crate::error::{Error, Result};

/// Default depth of each worker's submission ring: 32, so a migration
/// thread that outruns its workers sleeps once per 16 pages (the wake-up
/// comes at half) instead of once per 2 at the 2018 RFC's 4; measured in
/// docs/pool.md, "Ring depth".
pub const DEFAULT_RING_DEPTH: u32 = 32;
/// Largest ring depth: beyond this a worker only hoards pages.
pub const MAX_RING_DEPTH: u32 = 1024;
/// Most worker threads in one pool. QEMU's `compress-threads` goes up to 255;
/// 256 keeps the C statistics array a power of two.
pub const MAX_THREADS: u32 = 256;
/// Smallest page size (bytes).
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest page size (bytes).
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Shape of a compression pool (mirrors `vmig_comp_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompConfig {
    /// Worker threads, 1..=[`MAX_THREADS`].
    pub threads: u32,
    /// zlib level 0..=9 (0 = stored blocks, 1 = fastest, 9 = best).
    pub level: i32,
    /// Page size in bytes: a power of two in 512..=65536.
    pub page_size: u32,
    /// Depth of each worker's submission ring: 0 selects
    /// [`DEFAULT_RING_DEPTH`], otherwise a power of two in 2..=1024 (the vmig
    /// ring's capacity is a power of two, and the depth is enforced by it).
    pub ring_depth: u32,
}

impl Default for CompConfig {
    fn default() -> Self {
        CompConfig { threads: 1, level: 1, page_size: 4096, ring_depth: 0 }
    }
}

impl CompConfig {
    /// Checks every field; returns the effective ring depth.
    ///
    /// ```
    /// use vmig::pool::CompConfig;
    /// let ok = CompConfig { threads: 2, level: 1, page_size: 4096, ring_depth: 0 };
    /// assert!(ok.validate().is_ok());
    /// assert!(CompConfig { page_size: 1000, ..ok }.validate().is_err(), "not a power of two");
    /// ```
    pub fn validate(&self) -> Result<u32> {
        check_threads(self.threads)?;
        if !(0..=9).contains(&self.level) {
            return Err(Error::InvalidArgument("level must be 0..=9"));
        }
        check_page_size(self.page_size)?;
        let depth = if self.ring_depth == 0 { DEFAULT_RING_DEPTH } else { self.ring_depth };
        if !(2..=MAX_RING_DEPTH).contains(&depth) || !depth.is_power_of_two() {
            return Err(Error::InvalidArgument("ring_depth must be 0 or a power of two in 2..=1024"));
        }
        Ok(depth)
    }
}

/// Default spin budget (`PoolOptions::spin_ns`), in nanoseconds: how long
/// a pool thread that ran out of work polls before it sleeps on a futex.
/// Set from the spin sweep in docs/pool.md, "Spin budget".
pub const DEFAULT_SPIN_NS: u32 = 5_000;
/// Largest spin budget: 1 ms, far past any futex round trip.
pub const MAX_SPIN_NS: u32 = 1_000_000;

/// Options of a compression or decompression pool beyond its shape
/// (mirrors `vmig_pool_options`).
/// `Default` gives the defaults every field documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Spin budget in nanoseconds, 0..=[`MAX_SPIN_NS`]: how long a worker
    /// with an empty ring, or the submitter waiting for a result or ring
    /// space, polls (yielding) before it sleeps. Only spent when the
    /// workers and the submitter fit on the CPUs; 0 = sleep after a few
    /// `pause` rounds. Default [`DEFAULT_SPIN_NS`].
    pub spin_ns: u32,
    /// The deflate backend; `None` (the default) is [`DEFAULT_BACKEND`]
    /// for compression and [`Backend::default_inflater`] for
    /// decompression. A backend this build lacks is `Unsupported`.
    pub backend: Option<Backend>,
}

/// The compression pool's default backend, chosen by end-to-end migration
/// time at 1 and 10 Gbit/s: docs/pool.md, "Backends".
pub const DEFAULT_BACKEND: Backend = Backend::ZlibRs;

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { spin_ns: DEFAULT_SPIN_NS, backend: None }
    }
}

impl PoolOptions {
    /// Checks every field.
    ///
    /// ```
    /// use vmig::pool::PoolOptions;
    /// assert!(PoolOptions::default().validate().is_ok());
    /// assert!(PoolOptions { spin_ns: 2_000_000, ..Default::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.spin_ns > MAX_SPIN_NS {
            return Err(Error::InvalidArgument("spin_ns must be at most 1000000"));
        }
        self.backend.map_or(Ok(()), Backend::check)
    }
}

pub(crate) fn check_threads(threads: u32) -> Result<()> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::InvalidArgument("threads must be 1..=256"));
    }
    Ok(())
}

pub(crate) fn check_page_size(page_size: u32) -> Result<()> {
    if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(Error::InvalidArgument("page_size must be a power of two in 512..=65536"));
    }
    Ok(())
}

/// zlib's `compressBound()`: the largest zlib stream for `len` input bytes.
/// Every job buffer is this big, so `deflate(Z_FINISH)` always completes.
pub const fn compress_bound(len: u32) -> usize {
    let n = len as usize;
    n + (n >> 12) + (n >> 14) + (n >> 25) + 13
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(CompConfig::default().validate(), Ok(32));
        let bad = [
            CompConfig { threads: 0, ..Default::default() },
            CompConfig { threads: 257, ..Default::default() },
            CompConfig { level: -1, ..Default::default() },
            CompConfig { level: 10, ..Default::default() },
            CompConfig { page_size: 256, ..Default::default() },
            CompConfig { page_size: 4097, ..Default::default() },
            CompConfig { page_size: 131072, ..Default::default() },
            CompConfig { ring_depth: 1, ..Default::default() },
            CompConfig { ring_depth: 3, ..Default::default() },
            CompConfig { ring_depth: 2048, ..Default::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert_eq!(CompConfig { ring_depth: 2, page_size: 512, level: 9, threads: 256 }.validate(), Ok(2));
    }

    #[test]
    fn bound_matches_zlib() {
        // zlib 1.2.13 compressBound(4096) = 4096 + 1 + 0 + 0 + 13.
        assert_eq!(compress_bound(4096), 4110);
    }
}
