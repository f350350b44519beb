//! PREDICTIVE: sleep just long enough for the fullest ring to reach a target
//! fill at the next reap.
//!
//! Each reap gives a rate sample for the fullest ring, `max_ring_fill /
//! elapsed` (entries per microsecond; `elapsed` is the time actually slept,
//! so a kicked, early reap is measured correctly, but at least the minimum
//! interval, so one batch of entries is not read as a huge rate). If ring-full exits
//! happened, some ring held at least `ring_size` entries within `elapsed`
//! even if the VMM emptied it elsewhere (QEMU reaps on the vCPU thread at a
//! ring-full exit), so the sample is at least `ring_size / elapsed`.
//!
//! The estimate attacks fast and decays slowly: a sample above it replaces
//! it at once (a burst must be caught within one interval, or a vCPU
//! stalls), a sample below moves it by `elapsed / (elapsed + decay_us)` of
//! the gap, a first-order low-pass whose time constant is in wall time, not
//! in reaps, so a fast-reaping phase does not forget a burst faster than a
//! slow one. Then
//!
//! ```text
//! interval = target_permille/1000 * ring_size / rate_estimate
//! ```
//!
//! clamped to `[min_interval_us, max_interval_us]`; a zero estimate gives
//! the maximum. The first interval is a short probe (see
//! [`Predictive::initial_us`]). All arithmetic is in `f64` and clamped before converting
//! back, so no input overflows.

use super::config::ReaperConfig;
use super::sample::Sample;

/// Rate estimator and interval chooser.
#[derive(Debug)]
pub struct Predictive {
    /// Target fill of the fullest ring at the next reap, in entries.
    target: f64,
    ring_size: f64,
    decay_us: f64,
    min_us: u64,
    max_us: u64,
    probe_us: u64,
    /// Estimated fill rate of the fullest ring, entries per microsecond.
    rate: f64,
}

impl Predictive {
    /// A controller for `cfg` (already validated), with no rate seen yet.
    pub fn new(cfg: &ReaperConfig) -> Self {
        let ring_size = f64::from(cfg.ring_size);
        Predictive {
            target: ring_size * f64::from(cfg.predictive.target_permille) / 1000.0,
            ring_size,
            decay_us: cfg.predictive.decay_us as f64,
            min_us: cfg.min_interval_us,
            max_us: cfg.max_interval_us,
            probe_us: cfg.clamp(cfg.predictive.probe_us),
            rate: 0.0,
        }
    }

    /// The first interval: the probe. With no rate measured yet, one early
    /// wake-up measures it before a busy guest can fill a ring (waiting the
    /// maximum first would let every busy vCPU take a ring-full exit at the
    /// start). See `PredictiveConfig::probe_us` for its length.
    pub fn initial_us(&self) -> u64 {
        self.probe_us
    }

    /// The current rate estimate, entries per second.
    pub fn rate_per_sec(&self) -> f64 {
        self.rate * 1e6
    }

    /// One reap.
    ///
    /// ```
    /// use vmig::reaper::{predictive::Predictive, Policy, ReaperConfig, Sample};
    /// let mut p = Predictive::new(&ReaperConfig::with_policy(Policy::Predictive));
    /// assert_eq!(p.initial_us(), 10_000, "the probe");
    /// // The probe found 204 entries in the fullest ring: 20 400 entries/s, so
    /// // half the 4096-entry ring (the target) fills in about 100 ms.
    /// let s = Sample { max_ring_fill: 204, total_reaped: 300, ring_full_events: 0, elapsed_us: 10_000 };
    /// let next = p.update(&s);
    /// assert!((100_000..=101_000).contains(&next), "{next}");
    /// assert!((p.rate_per_sec() - 20_400.0).abs() < 1.0);
    /// ```
    pub fn update(&mut self, s: &Sample) -> u64 {
        // A rate is measured over at least the minimum interval. Entries
        // arrive in batches (a PML buffer flush, a vCPU catching up after a
        // stall), so over a few microseconds - a reap right after a kicked
        // one - one batch reads as a huge rate; no interval shorter than
        // the minimum can be chosen anyway. Measured in docs/controllers.md
        // ("Why the defaults").
        let elapsed = s.elapsed_us.max(self.min_us) as f64;
        let mut fill = s.max_ring_fill as f64;
        if s.ring_full_events > 0 {
            fill = fill.max(self.ring_size);
        }
        // A rate whose target fill comes sooner than the minimum interval
        // cannot be served by any interval; believing more than that only
        // makes one batch (KVM flushes a 512-entry PML buffer at once) pin
        // the interval at the minimum for several decay times.
        let sample = (fill / elapsed).min(self.max_rate());
        if sample >= self.rate {
            self.rate = sample;
        } else {
            let w = elapsed / (elapsed + self.decay_us);
            self.rate += (sample - self.rate) * w;
        }
        self.interval_us()
    }

    /// The rate at which the target fill takes exactly `min_interval_us`.
    fn max_rate(&self) -> f64 {
        self.target / self.min_us as f64
    }

    fn interval_us(&self) -> u64 {
        if self.rate <= 0.0 {
            return self.max_us;
        }
        let us = self.target / self.rate;
        // Clamp in f64 first: `as u64` saturates anyway, but this keeps the
        // bound explicit (and NaN cannot occur: target > 0, rate > 0).
        us.clamp(self.min_us as f64, self.max_us as f64).round() as u64
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::reaper::Policy;

    fn cfg() -> ReaperConfig {
        ReaperConfig::with_policy(Policy::Predictive)
    }

    fn reap(fill: u64, full: u64, elapsed_us: u64) -> Sample {
        Sample { max_ring_fill: fill, total_reaped: fill, ring_full_events: full, elapsed_us }
    }

    #[test]
    fn idle_stays_at_max() {
        let mut p = Predictive::new(&cfg());
        assert_eq!(p.initial_us(), 10_000);
        assert_eq!(p.update(&reap(0, 0, 10_000)), 2_000_000);
        // 50 entries/s: 2048 entries take 41 s, so the maximum.
        assert_eq!(p.update(&reap(100, 0, 2_000_000)), 2_000_000);
    }

    #[test]
    fn targets_half_the_ring() {
        let mut p = Predictive::new(&cfg());
        // 4096 entries in 20 ms (204.8 k/s): 2048 entries take 10 ms.
        assert_eq!(p.update(&reap(4096, 0, 20_000)), 10_000);
        // Steady at that rate: stays.
        assert_eq!(p.update(&reap(2048, 0, 10_000)), 10_000);
    }

    #[test]
    fn fast_attack_slow_decay() {
        let mut p = Predictive::new(&cfg());
        p.update(&reap(2048, 0, 10_000)); // 204.8 k/s
        // A quiet interval of 10 ms barely moves the estimate (10/2010).
        let after_quiet = p.update(&reap(0, 0, 10_000));
        assert!((10_000..10_100).contains(&after_quiet), "{after_quiet}");
        // 2 s of quiet (one time constant) in one sample: gap halves.
        let after_long = p.update(&reap(0, 0, 2_000_000));
        assert!((19_000..21_000).contains(&after_long), "{after_long}");
        // A burst 4x faster is taken at once.
        assert_eq!(p.update(&reap(4096, 0, 5_000)), 2_500);
    }

    #[test]
    fn a_single_batch_cannot_pin_the_minimum() {
        let mut p = Predictive::new(&cfg());
        p.update(&reap(2048, 0, 10_000)); // 204.8 k/s: 10 ms
        // 4096 entries within 10 us (one batch) counts as at most the rate
        // the minimum interval serves (2048 entries per ms)...
        assert_eq!(p.update(&reap(4096, 1, 10)), 1_000);
        assert!((p.rate_per_sec() - 2.048e6).abs() < 1.0);
    }

    #[test]
    fn ring_full_means_at_least_a_ring() {
        let mut p = Predictive::new(&cfg());
        // The VMM emptied the ring on its vCPU thread; we saw 10 entries
        // but one ring filled within 100 ms.
        assert_eq!(p.update(&reap(10, 1, 100_000)), 50_000);
    }

    #[test]
    fn bounded_and_no_overflow() {
        let c = cfg();
        let mut p = Predictive::new(&c);
        assert_eq!(p.update(&reap(u64::MAX, u64::MAX, 0)), c.min_interval_us);
        // 1 entry/us over an enormous interval replaces the estimate: the
        // 2048-entry target takes 2048 us.
        assert_eq!(p.update(&reap(u64::MAX, 0, u64::MAX)), 2_048);
        let mut p = Predictive::new(&c);
        assert_eq!(p.update(&reap(1, 0, u64::MAX)), c.max_interval_us);
    }
}
