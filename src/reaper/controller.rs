//! The pure controller: policy dispatch and the time bookkeeping. No clock,
//! no sleeping: the caller passes the time in, so tests drive it directly.

use super::aimd::Aimd;
use super::config::{Policy, ReaperConfig};
use super::fixed::Fixed;
use super::levels::Levels;
use super::predictive::Predictive;
use super::sample::Sample;
use crate::error::Result;

#[derive(Debug)]
enum Engine {
    Fixed(Fixed),
    Levels(Levels),
    Aimd(Aimd),
    Predictive(Predictive),
}

/// Chooses the reaper's next interval from what each reap found.
#[derive(Debug)]
pub struct Controller {
    engine: Engine,
    /// Time of the previous update (or of creation), microseconds on the
    /// caller's monotonic clock.
    last_us: u64,
    interval_us: u64,
}

impl Controller {
    /// Validates `cfg` and starts a controller at time `now_us`.
    ///
    /// ```
    /// use vmig::reaper::{Controller, ReaperConfig};
    /// let c = Controller::new(&ReaperConfig::default(), 0).unwrap();
    /// assert_eq!(c.interval_us(), ReaperConfig::default().predictive.probe_us, "PREDICTIVE starts with its probe");
    /// ```
    pub fn new(cfg: &ReaperConfig, now_us: u64) -> Result<Self> {
        cfg.validate()?;
        let engine = match cfg.policy {
            Policy::Fixed => Engine::Fixed(Fixed::new(cfg)),
            Policy::Levels => Engine::Levels(Levels::new(cfg)),
            Policy::Aimd => Engine::Aimd(Aimd::new(cfg)),
            Policy::Predictive => Engine::Predictive(Predictive::new(cfg)),
        };
        let interval_us = match &engine {
            Engine::Fixed(e) => e.initial_us(),
            Engine::Levels(e) => e.initial_us(),
            Engine::Aimd(e) => e.initial_us(),
            Engine::Predictive(e) => e.initial_us(),
        };
        Ok(Controller { engine, last_us: now_us, interval_us })
    }

    /// The interval to sleep now, microseconds.
    ///
    /// ```
    /// use vmig::reaper::{Controller, Policy, ReaperConfig};
    /// let c = Controller::new(&ReaperConfig::with_policy(Policy::Fixed), 0).unwrap();
    /// assert_eq!(c.interval_us(), 1_000_000);
    /// ```
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// Records a reap at `now_us` and returns the next interval. A clock that
    /// goes backwards counts as no time elapsed.
    ///
    /// ```
    /// use vmig::reaper::{Controller, Policy, ReaperConfig};
    /// let cfg = ReaperConfig::with_policy(Policy::Aimd);
    /// let mut c = Controller::new(&cfg, 0).unwrap();
    /// let start = c.interval_us();
    /// // The fullest ring was 90% full at this reap: AIMD halves the interval.
    /// let next = c.update(start, u64::from(cfg.ring_size) * 9 / 10, 4000, 0);
    /// assert_eq!(next, start / 2);
    /// ```
    pub fn update(&mut self, now_us: u64, max_ring_fill: u64, total_reaped: u64, ring_full_events: u64) -> u64 {
        let elapsed_us = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        let s = Sample { max_ring_fill, total_reaped, ring_full_events, elapsed_us };
        self.interval_us = match &mut self.engine {
            Engine::Fixed(e) => e.update(&s),
            Engine::Levels(e) => e.update(&s),
            Engine::Aimd(e) => e.update(&s),
            Engine::Predictive(e) => e.update(&s),
        };
        self.interval_us
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn zero_ring_size_rejected() {
        let mut c = ReaperConfig::default();
        c.ring_size = 0;
        assert!(matches!(Controller::new(&c, 0), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn elapsed_comes_from_the_passed_time() {
        let mut c = Controller::new(&ReaperConfig::default(), 1_000).unwrap();
        assert_eq!(c.interval_us(), 10_000);
        // 2048 entries in 20 ms: the 2048-entry target takes 20 ms.
        assert_eq!(c.update(21_000, 2048, 2048, 0), 20_000);
        // Clock going backwards: elapsed 0, measured as the 1 ms minimum:
        // 2048 entries per ms is the fastest rate believed: the minimum.
        assert_eq!(c.update(5_000, 2048, 2048, 0), 1_000);
    }

    #[test]
    fn every_policy_stays_in_bounds() {
        for p in [Policy::Fixed, Policy::Levels, Policy::Aimd, Policy::Predictive] {
            let cfg = ReaperConfig::with_policy(p);
            let mut c = Controller::new(&cfg, 0).unwrap();
            let mut now = 0u64;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                now = now.wrapping_add(x % 2_000_000);
                let iv = c.update(now, x % 8192, x % 100_000, (x >> 40) % 3);
                assert!((cfg.min_interval_us..=cfg.max_interval_us).contains(&iv), "{p:?} {iv}");
            }
        }
    }
}
