//! Builds the engines of a run's stack: vmig's, or replicas of QEMU 7.2's.
//!
//! | seam | vmig | legacy |
//! | --- | --- | --- |
//! | compression | `vmig::pool::CompPool` | `vmig_legacy::compress` (QEMU 7.2 `do_data_compress`) |
//! | reaper | `vmig::reaper`, default policy | `vmig::reaper` FIXED 1 s (QEMU's `sleep(1)`) |
//! | throttle | `vmig::throttle::Throttle`, per vCPU | `vmig_legacy::throttle` (one VM-wide timer) |
//! | decompression | `vmig::pool::DecompPool` | the same (no legacy replica) |

use std::sync::Arc;

use crate::config::{SimConfig, Stack};
use crate::engines::{Compressor, Decompressor, GuestThrottle, ReaperCtl};
use crate::legacy_engines::{LegacyCompressor, LegacyVmThrottle};
use crate::vmig_engines::{VmigComp, VmigDecomp, VmigReaper, VmigThrottle};

/// The auto-converge throttle.
pub fn throttle(cfg: &SimConfig) -> Result<Arc<dyn GuestThrottle>, String> {
    Ok(match cfg.stack {
        Stack::Vmig => Arc::new(VmigThrottle::new(cfg.vcpus)?),
        Stack::Legacy => Arc::new(LegacyVmThrottle::new(cfg.vcpus)),
    })
}

/// The reaper interval controller (policy from the config or the stack).
pub fn reaper(cfg: &SimConfig) -> Result<Arc<dyn ReaperCtl>, String> {
    Ok(Arc::new(VmigReaper::new(cfg.reaper_policy(), cfg.dirty_ring_size)?))
}

/// The compressor, or None when compression is off.
pub fn compressor(cfg: &SimConfig) -> Result<Option<Box<dyn Compressor>>, String> {
    if cfg.compress_threads == 0 {
        return Ok(None);
    }
    Ok(Some(match cfg.stack {
        Stack::Vmig => Box::new(VmigComp::with_backend(cfg.compress_threads, cfg.compress_level, &cfg.comp_backend)?),
        Stack::Legacy => Box::new(LegacyCompressor::new(cfg.compress_threads, cfg.compress_level)?),
    }))
}

/// The destination's decompressor.
pub fn decompressor(cfg: &SimConfig) -> Result<Box<dyn Decompressor>, String> {
    Ok(Box::new(VmigDecomp::new(cfg.decompress_threads)?))
}
