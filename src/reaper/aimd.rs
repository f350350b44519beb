//! AIMD: Peter Xu's proposal in review of the LEVELS patch (qemu-devel,
//! April 2022): "if dirty ratio > 0.8 we half the sleep time (delay /= 2);
//! if dirty ratio <= 0.2 we increase the sleep time (delay += 20ms)", with
//! a minimum and a maximum. Here the dirty ratio is the *fullest* ring's
//! fill over the ring size (a ring-full exit is per vCPU), and a ring-full
//! exit since the last reap halves at once whatever the ratio.

use super::config::ReaperConfig;
use super::sample::{ratio, Sample};

/// Multiplicative decrease, additive increase.
#[derive(Debug)]
pub struct Aimd {
    high: f64,
    low: f64,
    step_us: u64,
    ring_size: u64,
    min_us: u64,
    max_us: u64,
    interval_us: u64,
}

impl Aimd {
    /// A controller for `cfg` (already validated), starting at the maximum.
    pub fn new(cfg: &ReaperConfig) -> Self {
        Aimd {
            high: f64::from(cfg.aimd.high_permille) / 1000.0,
            low: f64::from(cfg.aimd.low_permille) / 1000.0,
            step_us: cfg.aimd.step_us,
            ring_size: u64::from(cfg.ring_size),
            min_us: cfg.min_interval_us,
            max_us: cfg.max_interval_us,
            interval_us: cfg.max_interval_us,
        }
    }

    /// The first interval: the maximum, as QEMU today.
    pub fn initial_us(&self) -> u64 {
        self.interval_us
    }

    /// One reap.
    ///
    /// ```
    /// use vmig::reaper::{aimd::Aimd, Policy, ReaperConfig, Sample};
    /// let mut a = Aimd::new(&ReaperConfig::with_policy(Policy::Aimd));
    /// assert_eq!(a.initial_us(), 2_000_000);
    /// let busy = Sample { max_ring_fill: 3500, total_reaped: 3500, ring_full_events: 0, elapsed_us: 2_000_000 };
    /// assert_eq!(a.update(&busy), 1_000_000, "fill 0.85 > 0.8: halve");
    /// let idle = Sample { max_ring_fill: 10, total_reaped: 10, ring_full_events: 0, elapsed_us: 1_000_000 };
    /// assert_eq!(a.update(&idle), 1_020_000, "fill <= 0.2: add 20 ms");
    /// ```
    pub fn update(&mut self, s: &Sample) -> u64 {
        let fill = ratio(s.max_ring_fill, self.ring_size);
        let next = if s.ring_full_events > 0 || fill > self.high {
            self.interval_us / 2
        } else if fill <= self.low {
            self.interval_us.saturating_add(self.step_us)
        } else {
            self.interval_us
        };
        self.interval_us = next.clamp(self.min_us, self.max_us);
        self.interval_us
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn reap(fill: u64, full: u64) -> Sample {
        Sample { max_ring_fill: fill, total_reaped: fill, ring_full_events: full, elapsed_us: 1 }
    }

    #[test]
    fn halves_adds_and_holds() {
        let mut a = Aimd::new(&ReaperConfig::with_policy(super::super::Policy::Aimd));
        assert_eq!(a.initial_us(), 2_000_000);
        assert_eq!(a.update(&reap(3300, 0)), 1_000_000); // 0.806 > 0.8
        assert_eq!(a.update(&reap(3276, 0)), 1_000_000); // 0.7998: hold
        assert_eq!(a.update(&reap(819, 0)), 1_020_000); // 0.19995 <= 0.2
        assert_eq!(a.update(&reap(0, 1)), 510_000); // ring-full halves
        assert_eq!(a.update(&reap(4096, 5)), 255_000); // once, not per event
    }

    #[test]
    fn bounded_both_ways_without_overflow() {
        let mut cfg = ReaperConfig::default();
        cfg.aimd.step_us = u64::MAX;
        let mut a = Aimd::new(&cfg);
        assert_eq!(a.update(&reap(0, 0)), cfg.max_interval_us);
        for _ in 0..64 {
            a.update(&reap(u64::MAX, u64::MAX));
        }
        assert_eq!(a.update(&reap(u64::MAX, 0)), cfg.min_interval_us);
        assert_eq!(a.update(&reap(0, 0)), cfg.max_interval_us);
    }
}
