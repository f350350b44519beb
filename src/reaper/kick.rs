//! The reaper's sleep and its early wake-up: the only part of the reaper
//! that touches a clock or blocks.
//!
//! A `kicked` flag under a mutex, with a condition variable (parking_lot,
//! which parks on a futex). Ordering: `kick` sets the flag and notifies
//! while holding the mutex; `wait` checks and clears the flag while holding
//! it, and `Condvar::wait_until` releases it atomically with going to sleep.
//! So a kick that lands before `wait` (the reaper was still reaping) is not
//! lost: the next `wait` returns at once. Several kicks before one wait
//! collapse into one wake-up, which is what a reaper wants (one reap empties
//! every ring). Kicks are rare (one per ring-full exit), so a mutex on the
//! kick path costs nothing measurable.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A one-bit, sticky wake-up for one waiting thread.
#[derive(Debug, Default)]
pub struct Kick {
    kicked: Mutex<bool>,
    cv: Condvar,
}

impl Kick {
    /// A fresh, un-kicked event.
    ///
    /// ```
    /// use std::time::Duration;
    /// let k = vmig::reaper::Kick::new();
    /// assert!(!k.wait(Duration::from_millis(1)), "not kicked: times out");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sleeps up to `timeout`; returns `true` (and consumes the kick) if
    /// kicked before or during the sleep, `false` on timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let k = vmig::reaper::Kick::new();
    /// k.kick();
    /// assert!(k.wait(Duration::from_secs(10)), "kicked before the wait: returns at once");
    /// assert!(!k.wait(Duration::from_millis(1)), "the kick was consumed");
    /// ```
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut kicked = self.kicked.lock();
        while !*kicked {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut kicked, d).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut kicked),
            }
        }
        std::mem::replace(&mut *kicked, false)
    }

    /// Wakes the waiter, or makes its next `wait` return at once.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// let k = Arc::new(vmig::reaper::Kick::new());
    /// let t = { let k = k.clone(); std::thread::spawn(move || k.kick()) };
    /// assert!(k.wait(Duration::from_secs(10)));
    /// t.join().unwrap();
    /// ```
    pub fn kick(&self) {
        let mut kicked = self.kicked.lock();
        *kicked = true;
        self.cv.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn timeout_without_kick() {
        let k = Kick::new();
        assert!(!k.wait(Duration::from_millis(1)));
    }

    #[test]
    fn kick_before_wait_is_kept_once() {
        let k = Kick::new();
        k.kick();
        k.kick();
        assert!(k.wait(Duration::from_secs(60)));
        assert!(!k.wait(Duration::from_millis(1)));
    }

    #[test]
    fn kick_during_wait_wakes() {
        let k = Arc::new(Kick::new());
        let k2 = k.clone();
        let t = std::thread::spawn(move || k2.wait(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        k.kick();
        assert!(t.join().unwrap());
    }
}
