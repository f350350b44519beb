//! LEVELS: the six-level table of "kvm: Dynamically adjust the rate of dirty
//! ring reaper thread" (Chongyun Wu, qemu-devel, March 2022,
//! `calcu_sleep_time`), reproduced step for step:
//!
//! * ratio = entries reaped from *all* rings / ring size (the patch divides
//!   the total by `kvm_dirty_ring_size`, a per-vCPU size);
//! * a ring-full exit since the last reap raises the level by one;
//! * otherwise the wanted level is `floor(ratio / 0.1)` capped at 5; a
//!   higher want raises the level by one and resets the "slow down" count;
//!   a lower want counts, and the level drops by one once the count exceeds
//!   5; an equal want keeps everything;
//! * the level's sleep is 1 s, 500, 250, 125, 100 or 80 ms.
//!
//! One deliberate deviation: the patch writes `*speed_down_cnt++`, which
//! increments the pointer, not the count, so the posted code never slows
//! down again. We implement the evident intent (count, then drop), which
//! only makes LEVELS look better (fewer wake-ups once a burst is over).

use super::config::{ReaperConfig, LEVELS};
use super::sample::{ratio, Sample};

/// The level state machine.
#[derive(Debug)]
pub struct Levels {
    table: [u64; LEVELS],
    step: f64,
    stable_count: u32,
    ring_size: u64,
    level: usize,
    speed_down_cnt: u32,
}

impl Levels {
    /// A controller for `cfg` (already validated), starting at NORMAL.
    pub fn new(cfg: &ReaperConfig) -> Self {
        Levels {
            table: cfg.levels.interval_us.map(|us| cfg.clamp(us)),
            step: f64::from(cfg.levels.ratio_step_permille) / 1000.0,
            stable_count: cfg.levels.stable_count,
            ring_size: u64::from(cfg.ring_size),
            level: 0,
            speed_down_cnt: 0,
        }
    }

    /// The first interval: level NORMAL.
    pub fn initial_us(&self) -> u64 {
        self.table[0]
    }

    /// The current level, 0 (NORMAL) to 5 (MAX_SPEED).
    pub fn level(&self) -> usize {
        self.level
    }

    /// One reap: moves the level as the patch does, returns its sleep.
    ///
    /// ```
    /// use vmig::reaper::{levels::Levels, Policy, ReaperConfig, Sample};
    /// let mut l = Levels::new(&ReaperConfig::with_policy(Policy::Levels));
    /// assert_eq!((l.level(), l.initial_us()), (0, 1_000_000));
    /// // A ring-full exit raises the level by one: the patch's 500 ms.
    /// let exit = Sample { max_ring_fill: 4096, total_reaped: 4096, ring_full_events: 1, elapsed_us: 1_000_000 };
    /// assert_eq!(l.update(&exit), 500_000);
    /// assert_eq!(l.level(), 1);
    /// ```
    pub fn update(&mut self, s: &Sample) -> u64 {
        let max = LEVELS - 1;
        if s.ring_full_events > 0 {
            self.level = (self.level + 1).min(max);
        } else {
            let r = ratio(s.total_reaped, self.ring_size);
            // `ratio < step * k` for the first k in 1..=5, else MAX_SPEED;
            // computed as the patch does, by comparison, to keep its edges.
            let want = (1..LEVELS).find(|&k| r < self.step * k as f64).map_or(max, |k| k - 1);
            if want > self.level {
                self.level += 1;
                self.speed_down_cnt = 0;
            } else if want < self.level {
                self.speed_down_cnt = self.speed_down_cnt.saturating_add(1);
                if self.speed_down_cnt > self.stable_count {
                    self.level -= 1;
                }
            }
        }
        self.table[self.level]
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn reap(total: u64, full: u64) -> Sample {
        Sample { max_ring_fill: total, total_reaped: total, ring_full_events: full, elapsed_us: 1000 }
    }

    #[test]
    fn table_and_bands() {
        let cfg = ReaperConfig::default();
        let mut l = Levels::new(&cfg);
        assert_eq!(l.initial_us(), 1_000_000);
        // ratio 0.35 wants FAST3 but climbs one level per reap.
        let busy = reap(4096 * 35 / 100, 0);
        assert_eq!(l.update(&busy), 500_000);
        assert_eq!(l.update(&busy), 250_000);
        assert_eq!(l.update(&busy), 125_000);
        assert_eq!(l.update(&busy), 125_000);
        // Ring-full climbs regardless of the ratio, and stops at MAX_SPEED.
        assert_eq!(l.update(&reap(0, 1)), 100_000);
        assert_eq!(l.update(&reap(0, 3)), 80_000);
        assert_eq!(l.update(&reap(0, u64::MAX)), 80_000);
        assert_eq!(l.level(), 5);
    }

    #[test]
    fn slows_down_only_after_more_than_stable_count() {
        let mut l = Levels::new(&ReaperConfig::default());
        l.update(&reap(0, 1));
        assert_eq!(l.level(), 1);
        for _ in 0..5 {
            assert_eq!(l.update(&reap(0, 0)), 500_000);
        }
        // The sixth "want slower" drops a level ("> 5").
        assert_eq!(l.update(&reap(0, 0)), 1_000_000);
        assert_eq!(l.update(&reap(0, 0)), 1_000_000);
    }

    #[test]
    fn sums_all_rings_and_survives_extremes() {
        let mut l = Levels::new(&ReaperConfig::default());
        // Ten vCPUs at 10% each sum to a ratio of 1.0: the patch's choice.
        let s = Sample { max_ring_fill: 410, total_reaped: 4100, ring_full_events: 0, elapsed_us: 0 };
        assert_eq!(l.update(&s), 500_000);
        let huge = Sample { max_ring_fill: u64::MAX, total_reaped: u64::MAX, ring_full_events: 0, elapsed_us: u64::MAX };
        for _ in 0..10 {
            l.update(&huge);
        }
        assert_eq!(l.level(), 5);
    }
}
