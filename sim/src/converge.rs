//! Auto-converge's trigger, as QEMU 7.2 `migration_trigger_throttle` and
//! `mig_throttle_guest_down`: pure logic, time passed in.
//!
//! At every dirty-log sync the newly dirty pages are added to the current
//! period. A period closes at the first sync more than 1 s after the
//! previous close; then, if the bytes dirtied in it exceed
//! `throttle-trigger-threshold` (50%) of the bytes sent in it, a counter
//! goes up, and every second time the throttle is raised: to
//! `cpu-throttle-initial` if off, else by `cpu-throttle-increment`, capped at
//! `max-cpu-throttle`. (QEMU never resets the counter on a calm period.)

use std::time::{Duration, Instant};

/// QEMU's `throttle-trigger-threshold` default: 50%.
pub const TRIGGER_THRESHOLD_PCT: u64 = 50;
/// QEMU only accounts a period after 1 s (`migration_bitmap_sync`).
pub const PERIOD: Duration = Duration::from_secs(1);

/// The trigger's state (QEMU `RAMState` fields of the same names).
#[derive(Debug)]
pub struct Trigger {
    initial: u32,
    increment: u32,
    max: u32,
    time_last_bitmap_sync: Instant,
    num_dirty_pages_period: u64,
    bytes_xfer_prev: u64,
    dirty_rate_high_cnt: u32,
    /// Pages dirtied per second in the last closed period.
    pub dirty_pages_rate: u64,
}

impl Trigger {
    /// A trigger with QEMU's three throttle parameters, starting at `now`.
    pub fn new(initial: u32, increment: u32, max: u32, now: Instant) -> Self {
        Trigger {
            initial,
            increment,
            max,
            time_last_bitmap_sync: now,
            num_dirty_pages_period: 0,
            bytes_xfer_prev: 0,
            dirty_rate_high_cnt: 0,
            dirty_pages_rate: 0,
        }
    }

    /// One sync found `new_dirty` pages of `page_size` bytes; `transferred`
    /// bytes have been sent so far and the throttle is at `current`%.
    /// Returns the new percentage when the throttle must go up.
    pub fn on_sync(
        &mut self,
        now: Instant,
        new_dirty: u64,
        page_size: u64,
        transferred: u64,
        current: u32,
    ) -> Option<u32> {
        self.num_dirty_pages_period += new_dirty;
        let period = now.saturating_duration_since(self.time_last_bitmap_sync);
        if period <= PERIOD {
            return None;
        }
        let bytes_xfer_period = transferred - self.bytes_xfer_prev;
        let bytes_dirty_period = self.num_dirty_pages_period * page_size;
        let bytes_dirty_threshold = bytes_xfer_period * TRIGGER_THRESHOLD_PCT / 100;
        let mut raise = None;
        if bytes_dirty_period > bytes_dirty_threshold {
            self.dirty_rate_high_cnt += 1;
            if self.dirty_rate_high_cnt >= 2 {
                self.dirty_rate_high_cnt = 0;
                raise = Some(if current == 0 { self.initial } else { (current + self.increment).min(self.max) });
            }
        }
        self.dirty_pages_rate = (self.num_dirty_pages_period as f64 / period.as_secs_f64()) as u64;
        self.time_last_bitmap_sync = now;
        self.num_dirty_pages_period = 0;
        self.bytes_xfer_prev = transferred;
        raise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_every_second_hot_period_and_caps() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_millis(1001 * k);
        let mut t = Trigger::new(20, 10, 35, t0);
        // Within the first second: only accumulates.
        assert_eq!(t.on_sync(t0 + Duration::from_millis(500), 1000, 4096, 1 << 20, 0), None);
        // Hot period (4 MB dirtied vs 50% of 1 MB sent): first time, no raise.
        assert_eq!(t.on_sync(s(1), 0, 4096, 1 << 20, 0), None);
        assert_eq!(t.dirty_pages_rate, 999);
        // Second hot period: initial.
        assert_eq!(t.on_sync(s(2), 1000, 4096, 2 << 20, 0), Some(20));
        assert_eq!(t.on_sync(s(3), 1000, 4096, 3 << 20, 20), None);
        assert_eq!(t.on_sync(s(4), 1000, 4096, 4 << 20, 20), Some(30));
        assert_eq!(t.on_sync(s(5), 1000, 4096, 5 << 20, 30), None);
        assert_eq!(t.on_sync(s(6), 1000, 4096, 6 << 20, 30), Some(35), "capped at max");
    }

    #[test]
    fn calm_periods_do_not_count() {
        let t0 = Instant::now();
        let mut t = Trigger::new(20, 10, 99, t0);
        let mut sent = 0;
        for k in 1..10 {
            sent += 100 << 20;
            // 1000 pages = 4 MB dirtied vs 50 MB allowed.
            assert_eq!(t.on_sync(t0 + Duration::from_millis(1001 * k), 1000, 4096, sent, 0), None);
        }
    }
}
