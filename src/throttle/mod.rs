//! Accurate per-vCPU throttle for auto-converge.
//!
//! QEMU (softmmu/cpu-throttle.c) drives every vCPU from one VM-wide timer
//! whose period is `timeslice / (1 - pct)`: each tick queues a fixed
//! `pct / (1 - pct) * timeslice` sleep on every vCPU that is not still
//! sleeping from the previous tick. Late ticks, skipped vCPUs and sleeps that
//! overshoot are never made up, so 99% yields about 95% in practice (the
//! per-vCPU timer series, Cosmin Marin, qemu-devel 2019, measured 94.55%).
//!
//! Here each vCPU has its own closed-loop account ([`account`]): the sleep
//! is computed from the run time measured since its last sleep, and
//! oversleep or a late timer is carried into the next sleep, so the
//! long-run sleep share converges on the target whatever the timer
//! precision. Two ways to use it:
//!
//! * A VMM with its own per-vCPU timers calls [`Throttle::vcpu_sleep_ns`]
//!   when the timer fires (sleep that long) and [`Throttle::vcpu_next_ns`]
//!   when the sleep ends (arm the timer for then).
//! * A VMM without calls [`Throttle::vcpu_run`] from the vCPU thread at safe
//!   points; it sleeps whatever is owed. [`Throttle::kick`] ends that sleep
//!   early (e.g. to stop the VM); [`Throttle::set`] wakes sleepers so a new
//!   percentage applies at once.
//!
//! All methods take `&self`: share one `Throttle` between the migration
//! thread and the vCPU threads. Per-vCPU state is cache-padded so vCPUs do
//! not share lines; calls for one vCPU are serialised by its own mutex
//! (normally uncontended: only that vCPU's thread or timer uses it).

pub(crate) mod account;
pub(crate) mod park;

use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};
use account::{Setting, VcpuAccount};
use park::{Park, Woken};

/// QEMU's `CPU_THROTTLE_PCT_MAX`: at 100% a vCPU would never run.
pub const MAX_PCT: u32 = 99;
/// QEMU's `CPU_THROTTLE_TIMESLICE_NS`.
pub const QEMU_TIMESLICE_NS: u64 = 10_000_000;
/// Most vCPUs per throttle: 2^16, above KVM's largest `KVM_MAX_VCPUS`
/// (4096 on x86-64); only there so a bad count fails instead of allocating.
pub const MAX_VCPUS: u32 = 1 << 16;

struct VcpuSlot {
    account: Mutex<VcpuAccount>,
    park: Park,
}

/// A VM's throttle: one percentage, one closed-loop account per vCPU.
pub struct Throttle {
    /// `gen << 32 | pct`: both in one word so a reader never pairs a new
    /// percentage with an old generation.
    setting: AtomicU64,
    timeslice_ns: u64,
    vcpus: Box<[CachePadded<VcpuSlot>]>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("pct", &self.get()).field("vcpus", &self.vcpus.len()).finish()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `vcpu_run` uses, and the one a
/// caller mixing `vcpu_run` with the `_ns` calls must pass.
///
/// ```
/// let a = vmig::throttle::monotonic_ns();
/// assert!(vmig::throttle::monotonic_ns() >= a);
/// ```
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on
    // every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

impl Throttle {
    /// A throttle for `nr_vcpus` vCPUs (1..=[`MAX_VCPUS`]) running
    /// `timeslice_ns` (> 0; QEMU uses [`QEMU_TIMESLICE_NS`]) between sleeps.
    /// Starts off (0%).
    ///
    /// ```
    /// use vmig::throttle::{Throttle, QEMU_TIMESLICE_NS};
    /// let t = Throttle::new(4, QEMU_TIMESLICE_NS).unwrap();
    /// assert_eq!(t.get(), 0);
    /// assert!(Throttle::new(0, QEMU_TIMESLICE_NS).is_err());
    /// ```
    pub fn new(nr_vcpus: u32, timeslice_ns: u64) -> Result<Self> {
        if nr_vcpus == 0 || nr_vcpus > MAX_VCPUS {
            return Err(Error::InvalidArgument("nr_vcpus must be in 1..=65536"));
        }
        if timeslice_ns == 0 {
            return Err(Error::InvalidArgument("timeslice_ns is 0"));
        }
        let mut v = Vec::new();
        v.try_reserve_exact(nr_vcpus as usize).map_err(|_| Error::OutOfMemory)?;
        v.extend((0..nr_vcpus).map(|_| CachePadded::new(VcpuSlot { account: Mutex::default(), park: Park::default() })));
        Ok(Throttle { setting: AtomicU64::new(0), timeslice_ns, vcpus: v.into_boxed_slice() })
    }

    fn setting(&self) -> Setting {
        // Relaxed: the word is the only datum (pct and its generation, read
        // together); a sleeper that must see a change reads it under its
        // park mutex, which orders it after `set`'s store (see `set`).
        let w = self.setting.load(Ordering::Relaxed);
        Setting { pct: w as u32, gen: w >> 32, timeslice_ns: self.timeslice_ns }
    }

    fn slot(&self, vcpu: u32) -> Result<&VcpuSlot> {
        self.vcpus.get(vcpu as usize).map(|s| &**s).ok_or(Error::InvalidArgument("vcpu out of range"))
    }

    /// Number of vCPUs.
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(3, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// assert_eq!(t.nr_vcpus(), 3);
    /// ```
    pub fn nr_vcpus(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// Sets the throttle: 0 (off) or 1..=99 percent of each vCPU's time
    /// spent asleep. A change wakes vCPUs sleeping in [`vcpu_run`](Self::vcpu_run)
    /// so the new value applies at once. Any thread.
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// t.set(20).unwrap(); // QEMU's cpu-throttle-initial
    /// assert_eq!(t.get(), 20);
    /// assert!(t.set(100).is_err(), "at 100% a vCPU would never run");
    /// ```
    pub fn set(&self, pct: u32) -> Result<()> {
        if pct > MAX_PCT {
            return Err(Error::InvalidArgument("throttle percentage must be 0..=99"));
        }
        // Relaxed RMW: the generation only has to change (atomicity does
        // that); the wake-up ordering comes from the park mutexes below: this
        // store is sequenced before each `nudge`'s lock/unlock, so a sleeper
        // that takes its mutex afterwards sees the new word, and one that
        // checked before is already waiting and gets the notification.
        let old = self.setting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            if w as u32 == pct {
                None
            } else {
                Some((((w >> 32) + 1) << 32) | u64::from(pct))
            }
        });
        if old.is_ok() {
            for s in self.vcpus.iter() {
                s.park.nudge();
            }
        }
        Ok(())
    }

    /// The current percentage. Any thread.
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// assert_eq!(t.get(), 0, "starts off");
    /// ```
    pub fn get(&self) -> u32 {
        self.setting().pct
    }

    /// For a VMM with its own timers: this vCPU's timer fired at `now_ns`;
    /// returns how long it must sleep now (0 when off, on the first call,
    /// or when earlier oversleep covers it). Then call
    /// [`vcpu_next_ns`](Self::vcpu_next_ns) when the sleep ends.
    ///
    /// Thread-safety: any thread; calls for one vCPU are serialised by its
    /// own mutex and should come from that vCPU's thread or timer (two
    /// callers interleaving on one vCPU would each see the other's phase).
    ///
    /// ```
    /// // 50% with a 10 ms timeslice, on the caller's own clock (ns).
    /// let t = vmig::throttle::Throttle::new(1, 10_000_000).unwrap();
    /// t.set(50).unwrap();
    /// let due = t.vcpu_next_ns(0, 0).unwrap(); // starts running at 0
    /// assert_eq!(due, 10_000_000);
    /// // The timer fired on time: 10 ms of run owe 10 ms of sleep.
    /// assert_eq!(t.vcpu_sleep_ns(0, due).unwrap(), 10_000_000);
    /// ```
    pub fn vcpu_sleep_ns(&self, vcpu: u32, now_ns: u64) -> Result<u64> {
        let s = self.setting();
        Ok(self.slot(vcpu)?.account.lock().begin_sleep(now_ns, &s))
    }

    /// For a VMM with its own timers: this vCPU runs again from `now_ns`
    /// (its sleep ended); returns when its timer should fire next, absolute
    /// ns on the caller's clock, or `u64::MAX` when the throttle is off.
    ///
    /// Thread-safety: as [`vcpu_sleep_ns`](Self::vcpu_sleep_ns).
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, 10_000_000).unwrap();
    /// assert_eq!(t.vcpu_next_ns(0, 0).unwrap(), u64::MAX, "off: no timer");
    /// t.set(50).unwrap();
    /// assert_eq!(t.vcpu_next_ns(0, 0).unwrap(), 10_000_000);
    /// ```
    pub fn vcpu_next_ns(&self, vcpu: u32, now_ns: u64) -> Result<u64> {
        let s = self.setting();
        Ok(self.slot(vcpu)?.account.lock().end_sleep(now_ns, &s))
    }

    /// For a VMM without timers: called by the vCPU thread at a safe point;
    /// sleeps whatever this vCPU owes now (nothing before its timeslice is
    /// up). Returns `true` if the sleep was cut short by [`kick`](Self::kick).
    ///
    /// Thread-safety: from `vcpu`'s own thread, one call at a time per vCPU;
    /// different vCPUs' threads call concurrently without sharing a cache
    /// line. Uses CLOCK_MONOTONIC ([`monotonic_ns`]).
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// assert!(!t.vcpu_run(0).unwrap(), "off: returns at once");
    /// t.set(50).unwrap();
    /// assert!(!t.vcpu_run(0).unwrap(), "first call: starts measuring, owes nothing yet");
    /// assert!(t.vcpu_run(1).is_err(), "no vCPU 1");
    /// ```
    pub fn vcpu_run(&self, vcpu: u32) -> Result<bool> {
        let slot = self.slot(vcpu)?;
        let s = self.setting();
        if s.pct == 0 {
            // Off: no lock, no clock. The account catches up with the new
            // generation when throttling starts again (`sync`).
            return Ok(false);
        }
        let now = monotonic_ns();
        let owed = {
            let mut a = slot.account.lock();
            a.sync(&s, now);
            match a.due_ns(&s) {
                Some(due) if now < due => return Ok(false),
                _ => a.begin_sleep(now, &s),
            }
        };
        let woken = if owed == 0 {
            Woken::Timeout
        } else {
            let deadline = Instant::now().checked_add(Duration::from_nanos(owed));
            let gen = s.gen;
            match deadline {
                Some(d) => slot.park.park(d, || self.setting().gen == gen),
                None => Woken::Timeout,
            }
        };
        slot.account.lock().end_sleep(monotonic_ns(), &self.setting());
        Ok(woken == Woken::Kicked)
    }

    /// For a VMM that kicks its vCPUs to their safe point (as QEMU kicks a
    /// vCPU out of `KVM_RUN` for its throttle timer): when `vcpu`'s next
    /// sleep falls due, CLOCK_MONOTONIC ns ([`monotonic_ns`]). `Some(0)`
    /// when the vCPU must reach a safe point now without a sleep being due
    /// (the throttle was turned on or changed since its last call, so its
    /// account starts a new run there); `None` when the throttle is off or
    /// the vCPU is asleep in [`vcpu_run`](Self::vcpu_run) (no kick needed:
    /// the sleep ends by itself). Kicking at this time instead of on a
    /// fixed period makes every kick end in a sleep: one exit per throttle
    /// cycle (docs/kvm.md, "Kicks from the per-vCPU due time").
    ///
    /// Thread-safety: any thread (takes the vCPU's mutex briefly).
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, 10_000_000).unwrap();
    /// assert_eq!(t.vcpu_due_ns(0).unwrap(), None, "off");
    /// t.set(50).unwrap();
    /// assert_eq!(t.vcpu_due_ns(0).unwrap(), Some(0), "must start measuring");
    /// assert!(!t.vcpu_run(0).unwrap());
    /// let due = t.vcpu_due_ns(0).unwrap().unwrap();
    /// assert!(due > vmig::throttle::monotonic_ns() - 10_000_000);
    /// assert!(t.vcpu_due_ns(1).is_err());
    /// ```
    pub fn vcpu_due_ns(&self, vcpu: u32) -> Result<Option<u64>> {
        let slot = self.slot(vcpu)?;
        let s = self.setting();
        if s.pct == 0 {
            return Ok(None);
        }
        Ok(slot.account.lock().kick_due_ns(&s))
    }

    /// Ends `vcpu`'s current [`vcpu_run`](Self::vcpu_run) sleep early, or
    /// its next one at once if it is not sleeping (the kick is kept until a
    /// sleep consumes it). The time not slept is owed later (at most one
    /// throttle cycle, and at least 100 ms, is carried). Any thread.
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// t.set(99).unwrap();
    /// t.vcpu_run(0).unwrap(); // starts measuring
    /// t.kick(0).unwrap(); // e.g. vm_stop: the next sleep ends at once
    /// std::thread::sleep(std::time::Duration::from_millis(12)); // past the timeslice
    /// assert!(t.vcpu_run(0).unwrap(), "the sleep was cut short by the kick");
    /// ```
    pub fn kick(&self, vcpu: u32) -> Result<()> {
        self.slot(vcpu)?.park.kick();
        Ok(())
    }

    /// Drops a pending kick of `vcpu`; true if there was one.
    ///
    /// ```
    /// let t = vmig::throttle::Throttle::new(1, vmig::throttle::QEMU_TIMESLICE_NS).unwrap();
    /// t.kick(0).unwrap();
    /// assert!(t.clear_kick(0).unwrap());
    /// assert!(!t.clear_kick(0).unwrap());
    /// ```
    pub fn clear_kick(&self, vcpu: u32) -> Result<bool> {
        Ok(self.slot(vcpu)?.park.take_kick())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn arguments() {
        assert!(Throttle::new(0, QEMU_TIMESLICE_NS).is_err());
        assert!(Throttle::new(MAX_VCPUS + 1, QEMU_TIMESLICE_NS).is_err());
        assert!(Throttle::new(1, 0).is_err());
        let t = Throttle::new(2, QEMU_TIMESLICE_NS).unwrap();
        assert_eq!(t.get(), 0);
        assert!(t.set(100).is_err());
        t.set(99).unwrap();
        assert_eq!(t.get(), 99);
        assert!(t.vcpu_sleep_ns(2, 0).is_err());
        assert!(t.vcpu_next_ns(2, 0).is_err());
        assert!(t.vcpu_run(2).is_err());
        assert!(t.kick(2).is_err());
    }

    #[test]
    fn timer_api_cycle() {
        let t = Throttle::new(1, 10_000_000).unwrap();
        assert_eq!(t.vcpu_next_ns(0, 0).unwrap(), u64::MAX);
        t.set(50).unwrap();
        assert_eq!(t.vcpu_next_ns(0, 0).unwrap(), 10_000_000);
        assert_eq!(t.vcpu_sleep_ns(0, 10_000_000).unwrap(), 10_000_000);
        assert_eq!(t.vcpu_next_ns(0, 20_000_000).unwrap(), 30_000_000);
    }

    /// 10 ms timeslice at 99%: 12 ms of run owe 1188 ms. A sleep ending in
    /// under `WOKEN` was ended early; the margin allows a loaded machine.
    const WOKEN: Duration = Duration::from_millis(1000);

    fn sleeping_vcpu(t: &Arc<Throttle>) -> std::thread::JoinHandle<(bool, Duration)> {
        t.vcpu_run(0).unwrap(); // starts measuring
        std::thread::sleep(Duration::from_millis(12));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            let t0 = Instant::now();
            (t2.vcpu_run(0).unwrap(), t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(10));
        h
    }

    #[test]
    fn kick_and_set_wake_a_sleeping_vcpu() {
        let t = Arc::new(Throttle::new(1, QEMU_TIMESLICE_NS).unwrap());
        t.set(99).unwrap();
        let h = sleeping_vcpu(&t);
        t.kick(0).unwrap();
        let (kicked, took) = h.join().unwrap();
        assert!(kicked);
        assert!(took < WOKEN, "{took:?}");

        // A setting change wakes it too, and is not reported as a kick.
        t.set(98).unwrap();
        let h = sleeping_vcpu(&t);
        t.set(0).unwrap();
        let (kicked, took) = h.join().unwrap();
        assert!(!kicked);
        assert!(took < WOKEN, "{took:?}");
        // Off: never sleeps.
        assert!(!t.vcpu_run(0).unwrap());
    }

    #[test]
    fn sticky_kick_skips_the_next_sleep() {
        let t = Throttle::new(1, QEMU_TIMESLICE_NS).unwrap();
        t.set(99).unwrap();
        t.vcpu_run(0).unwrap();
        t.kick(0).unwrap();
        std::thread::sleep(Duration::from_millis(12));
        let t0 = Instant::now();
        assert!(t.vcpu_run(0).unwrap());
        assert!(t0.elapsed() < WOKEN);
        assert!(!t.clear_kick(0).unwrap());
    }
}
