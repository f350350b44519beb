//! Builds the engines of a run's stack.

use std::sync::Arc;

use crate::config::SimConfig;
use crate::engines::{Compressor, Decompressor, GuestThrottle, ReaperCtl};
use crate::vmig_engines::{VmigComp, VmigDecomp, VmigReaper};

/// The throttle.
pub fn throttle(cfg: &SimConfig) -> Result<Arc<dyn GuestThrottle>, String> {
    Ok(Arc::new(crate::interim::SimpleThrottle::new(cfg.vcpus)))
}

/// The reaper interval controller.
pub fn reaper(cfg: &SimConfig) -> Result<Arc<dyn ReaperCtl>, String> {
    Ok(Arc::new(VmigReaper::new(cfg.reaper_policy(), cfg.dirty_ring_size)?))
}

/// The compressor, or None when compression is off.
pub fn compressor(cfg: &SimConfig) -> Result<Option<Box<dyn Compressor>>, String> {
    if cfg.compress_threads == 0 {
        return Ok(None);
    }
    Ok(Some(Box::new(VmigComp::new(cfg.compress_threads, cfg.compress_level)?)))
}

/// The destination's decompressor.
pub fn decompressor(cfg: &SimConfig) -> Result<Box<dyn Decompressor>, String> {
    Ok(Box::new(VmigDecomp::new(cfg.decompress_threads)?))
}
