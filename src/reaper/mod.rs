//! Adaptive KVM dirty-ring reaper interval.
//!
//! QEMU's reaper thread (`kvm_dirty_ring_reaper_thread`) sleeps a fixed
//! second between reaps, so a vCPU that dirties its ring faster than that
//! takes `KVM_EXIT_DIRTY_RING_FULL` exits and stalls. [`Reaper`] tells the
//! thread how long to sleep next, from what the last reap found, and lets a
//! vCPU that hit a ring-full exit wake it early:
//!
//! ```no_run
//! # use vmig::reaper::{Reaper, ReaperConfig};
//! let reaper = Reaper::new(&ReaperConfig::default()).unwrap();
//! loop {
//!     reaper.wait(); // sleeps the interval, or until `reaper.kick()`
//!     let (max_fill, total, full_exits) = (0, 0, 0); // reap every vCPU ring here
//!     reaper.update(max_fill, total, full_exits);
//! }
//! ```
//!
//! Layout: [`config`] (policy, bounds, tunables and why), the pure
//! [`Controller`] with one file per policy ([`fixed`], [`levels`], [`aimd`],
//! [`predictive`]), and [`kick`], the sleep/wake edge. The controller takes
//! time as an argument; [`Reaper`] supplies a monotonic clock.

pub mod aimd;
pub mod config;
pub mod controller;
pub mod fixed;
pub mod kick;
pub mod levels;
pub mod predictive;
pub mod sample;

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use config::{AimdConfig, FixedConfig, LevelsConfig, Policy, PredictiveConfig, ReaperConfig};
pub use controller::Controller;
pub use kick::Kick;
pub use sample::Sample;

use crate::error::Result;

/// A controller plus its clock and its kickable sleep. `Sync`: share it
/// (e.g. in an `Arc`) between the reaper thread and the vCPU threads.
#[derive(Debug)]
pub struct Reaper {
    epoch: Instant,
    /// Taken by `update` and `wait` (reaper thread); uncontended in normal
    /// use, it only makes a stray concurrent call safe.
    ctl: Mutex<Controller>,
    kick: Kick,
}

impl Reaper {
    /// Validates `cfg` and creates a reaper.
    ///
    /// ```
    /// use vmig::reaper::{Reaper, ReaperConfig};
    /// let reaper = Reaper::new(&ReaperConfig::default()).unwrap();
    /// assert!(reaper.interval_us() > 0);
    /// let bad = ReaperConfig { ring_size: 0, ..ReaperConfig::default() };
    /// assert!(Reaper::new(&bad).is_err());
    /// ```
    pub fn new(cfg: &ReaperConfig) -> Result<Self> {
        let epoch = Instant::now();
        Ok(Reaper { epoch, ctl: Mutex::new(Controller::new(cfg, 0)?), kick: Kick::new() })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records a reap (see [`Controller::update`]) now; returns the next
    /// interval in microseconds.
    ///
    /// ```
    /// use vmig::reaper::{Policy, Reaper, ReaperConfig};
    /// let reaper = Reaper::new(&ReaperConfig::with_policy(Policy::Fixed)).unwrap();
    /// // The fullest ring held 100 entries, 250 were reaped, no ring-full exit.
    /// assert_eq!(reaper.update(100, 250, 0), 1_000_000, "FIXED: QEMU's 1 s");
    /// ```
    pub fn update(&self, max_ring_fill: u64, total_reaped: u64, ring_full_events: u64) -> u64 {
        let now = self.now_us();
        self.ctl.lock().update(now, max_ring_fill, total_reaped, ring_full_events)
    }

    /// The interval `wait` sleeps now, microseconds.
    ///
    /// ```
    /// use vmig::reaper::{Policy, Reaper, ReaperConfig};
    /// let reaper = Reaper::new(&ReaperConfig::with_policy(Policy::Fixed)).unwrap();
    /// assert_eq!(reaper.interval_us(), 1_000_000);
    /// ```
    pub fn interval_us(&self) -> u64 {
        self.ctl.lock().interval_us()
    }

    /// Sleeps the current interval; `true` if woken early by [`kick`](Self::kick)
    /// (or a kick came since the last wait), `false` on timeout.
    ///
    /// ```
    /// use vmig::reaper::{Reaper, ReaperConfig};
    /// let reaper = Reaper::new(&ReaperConfig::default()).unwrap();
    /// reaper.kick(); // sticky: the next wait returns at once
    /// assert!(reaper.wait());
    /// ```
    pub fn wait(&self) -> bool {
        let iv = self.interval_us();
        self.kick.wait(Duration::from_micros(iv))
    }

    /// Ends the current (or next) `wait` early. Any thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vmig::reaper::{Reaper, ReaperConfig};
    /// let reaper = Arc::new(Reaper::new(&ReaperConfig::default()).unwrap());
    /// let vcpu = { let r = reaper.clone(); std::thread::spawn(move || r.kick()) };
    /// vcpu.join().unwrap(); // a vCPU hit a ring-full exit
    /// assert!(reaper.wait(), "woken by the kick, not the timeout");
    /// ```
    pub fn kick(&self) {
        self.kick.kick();
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn kick_wakes_a_two_second_wait() {
        let mut cfg = ReaperConfig::with_policy(Policy::Fixed);
        cfg.fixed.interval_us = 2_000_000;
        let r = Arc::new(Reaper::new(&cfg).unwrap());
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            (r2.wait(), t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(10));
        r.kick();
        let (kicked, took) = t.join().unwrap();
        assert!(kicked);
        // Generous: the machine running the tests may be heavily loaded.
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[test]
    fn wait_times_out_at_the_interval() {
        let mut cfg = ReaperConfig::with_policy(Policy::Fixed);
        cfg.fixed.interval_us = 2_000;
        cfg.min_interval_us = 1_000;
        let r = Reaper::new(&cfg).unwrap();
        assert_eq!(r.update(0, 0, 0), 2_000);
        let t0 = Instant::now();
        assert!(!r.wait());
        assert!(t0.elapsed() >= Duration::from_micros(2_000));
    }
}
