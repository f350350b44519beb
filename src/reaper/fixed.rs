//! FIXED: QEMU's reaper today. `kvm_dirty_ring_reaper_thread` (accel/kvm/
//! kvm-all.c) does `sleep(1)` whatever the guest dirties.

use super::config::ReaperConfig;
use super::sample::Sample;

/// The constant interval, clamped to the configured bounds.
#[derive(Debug)]
pub struct Fixed {
    interval_us: u64,
}

impl Fixed {
    /// A controller for `cfg` (already validated).
    pub fn new(cfg: &ReaperConfig) -> Self {
        Fixed { interval_us: cfg.clamp(cfg.fixed.interval_us) }
    }

    /// The first interval, before any reap.
    pub fn initial_us(&self) -> u64 {
        self.interval_us
    }

    /// Ignores the sample: that is the point of FIXED.
    ///
    /// ```
    /// use vmig::reaper::{fixed::Fixed, Policy, ReaperConfig, Sample};
    /// let mut f = Fixed::new(&ReaperConfig::with_policy(Policy::Fixed));
    /// assert_eq!(f.initial_us(), 1_000_000);
    /// let full = Sample { max_ring_fill: 4096, total_reaped: 4096, ring_full_events: 3, elapsed_us: 1_000_000 };
    /// assert_eq!(f.update(&full), 1_000_000, "even after ring-full exits");
    /// ```
    pub fn update(&mut self, _s: &Sample) -> u64 {
        self.interval_us
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_clamped() {
        let mut f = Fixed::new(&ReaperConfig::default());
        assert_eq!(f.initial_us(), 1_000_000);
        let busy = Sample { max_ring_fill: 4096, total_reaped: 1 << 40, ring_full_events: u64::MAX, elapsed_us: 1 };
        assert_eq!(f.update(&busy), 1_000_000);
        let mut cfg = ReaperConfig::default();
        cfg.max_interval_us = 300_000;
        assert_eq!(Fixed::new(&cfg).initial_us(), 300_000);
    }
}
