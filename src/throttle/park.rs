//! Where a vCPU thread sleeps in [`Throttle::vcpu_run`](super::Throttle::vcpu_run),
//! and how it is woken early.
//!
//! A mutex-protected `kicked` flag and a condition variable (parking_lot,
//! futex-based), one per vCPU. The sleeper checks its wake conditions (the
//! flag, a changed setting, the deadline) under the mutex and
//! `Condvar::wait_until` releases it atomically with sleeping; a waker
//! changes what it changes and notifies under the same mutex. So a wake-up
//! cannot fall between the check and the sleep. For the setting, which is
//! an atomic written outside this mutex, see `Throttle::set`.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// How a park ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The deadline passed.
    Timeout,
    /// [`Park::kick`] was called (now or before the park began).
    Kicked,
    /// `still_valid` turned false (the throttle setting changed).
    Changed,
}

/// One vCPU's sleep.
#[derive(Debug, Default)]
pub struct Park {
    kicked: Mutex<bool>,
    cv: Condvar,
}

impl Park {
    /// Sleeps until `deadline`, a kick, or `still_valid()` returning false.
    /// A pending kick is consumed.
    pub fn park(&self, deadline: Instant, still_valid: impl Fn() -> bool) -> Woken {
        let mut kicked = self.kicked.lock();
        loop {
            if std::mem::replace(&mut *kicked, false) {
                return Woken::Kicked;
            }
            if !still_valid() {
                return Woken::Changed;
            }
            if self.cv.wait_until(&mut kicked, deadline).timed_out() {
                return if std::mem::replace(&mut *kicked, false) { Woken::Kicked } else { Woken::Timeout };
            }
        }
    }

    /// Ends the current park early, or the next one at once (sticky).
    pub fn kick(&self) {
        *self.kicked.lock() = true;
        self.cv.notify_one();
    }

    /// Wakes a parked thread so it re-checks `still_valid`; no flag is left.
    pub fn nudge(&self) {
        let _g = self.kicked.lock();
        self.cv.notify_one();
    }

    /// Drops a pending kick; true if there was one.
    pub fn take_kick(&self) -> bool {
        std::mem::replace(&mut *self.kicked.lock(), false)
    }
}
