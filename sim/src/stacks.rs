//! Builds the engines of a run's stack.

use std::sync::Arc;

use crate::config::SimConfig;
use crate::engines::{Compressor, Decompressor, GuestThrottle, ReaperCtl};

/// The throttle.
pub fn throttle(cfg: &SimConfig) -> Result<Arc<dyn GuestThrottle>, String> {
    Ok(Arc::new(crate::interim::SimpleThrottle::new(cfg.vcpus)))
}

/// The reaper interval controller.
pub fn reaper(_cfg: &SimConfig) -> Result<Arc<dyn ReaperCtl>, String> {
    Ok(Arc::new(crate::interim::FixedReaper::new(1_000_000)))
}

/// The compressor, or None when compression is off.
pub fn compressor(_cfg: &SimConfig) -> Result<Option<Box<dyn Compressor>>, String> {
    Ok(None)
}

/// The destination's decompressor.
pub fn decompressor(_cfg: &SimConfig) -> Result<Box<dyn Decompressor>, String> {
    Ok(Box::new(crate::interim::InlineZlib))
}
