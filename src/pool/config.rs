//! Pool configuration and its validation.

use crate::error::{Error, Result};

/// Default depth of each worker's submission ring: the 2018 RFC's 4, about
/// one futex wake's worth of level-1 work; measurements and when to raise
/// it in docs/pool.md, "Ring depth".
pub const DEFAULT_RING_DEPTH: u32 = 4;
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
        assert_eq!(CompConfig::default().validate(), Ok(4));
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
