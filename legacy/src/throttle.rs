//! Replica of QEMU's VM-wide auto-converge throttle, for comparison only.
//!
//! Source: QEMU `softmmu/cpu-throttle.c` as in QEMU 7.2 (read at qemu/qemu
//! commit 1be5a765c08c): `cpu_throttle_set`, `cpu_throttle_timer_tick`,
//! `cpu_throttle_thread`. Used by `benches/throttle.rs` and by
//! `vmig-sim --compare` (through the vmig-legacy crate); it never reaches
//! libvmig.so and depends only on `std`.
//!
//! What QEMU does, and what this file reproduces step for step:
//!
//! * One timer for the whole VM (`throttle_timer`, QEMU_CLOCK_VIRTUAL_RT).
//!   Each tick, for every vCPU, `qatomic_xchg(&cpu->throttle_thread_scheduled, 1)`;
//!   if it was 0, `async_run_on_cpu(cpu, cpu_throttle_thread)`. A vCPU still
//!   sleeping (or not yet run its work) from an earlier tick is skipped.
//!   The tick then re-arms itself at `now + CPU_THROTTLE_TIMESLICE_NS /
//!   (1 - pct)` (now = when the tick ran, so timer lateness accumulates).
//!   With the percentage at 0 the tick returns without re-arming.
//! * `cpu_throttle_thread`, on the vCPU thread: sleeps a fixed
//!   `pct / (1 - pct) * CPU_THROTTLE_TIMESLICE_NS + 1` ns, in steps of
//!   `qemu_cond_timedwait_iothread(halt_cond, ms)` (whole milliseconds)
//!   while more than 1 ms remains, then `g_usleep` for the rest, stopping
//!   early if `cpu->stop`; then clears `throttle_thread_scheduled`.
//! * `cpu_throttle_set` clamps to 1..=99, stores the percentage and, if the
//!   throttle was inactive, runs a tick at once. `cpu_throttle_stop` stores 0.
//!
//! Not reproduced: the BQL (`qemu_cond_timedwait_iothread` and `g_usleep`
//! drop it; nothing here contends for one) and the latency of
//! `async_run_on_cpu` + `qemu_cpu_kick` getting a vCPU out of KVM_RUN,
//! replaced by the vCPU polling [`LegacyThrottle::safe_point`] often. Both
//! omissions make this replica *more* accurate than QEMU, never less.
//!
//! Nothing measured, recorded or carried: a late tick, a skipped vCPU or an
//! oversleep is simply lost, which is why 99% yields ~95% in QEMU.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// QEMU's `CPU_THROTTLE_PCT_MIN`.
pub const CPU_THROTTLE_PCT_MIN: u32 = 1;
/// QEMU's `CPU_THROTTLE_PCT_MAX`.
pub const CPU_THROTTLE_PCT_MAX: u32 = 99;
/// QEMU's `CPU_THROTTLE_TIMESLICE_NS` (10 ms).
pub const CPU_THROTTLE_TIMESLICE_NS: u64 = 10_000_000;
const SCALE_MS: i64 = 1_000_000;
const SCALE_US: i64 = 1_000;

/// Per-vCPU fields QEMU keeps in CPUState.
struct LegacyVcpu {
    /// `cpu->throttle_thread_scheduled`.
    throttle_thread_scheduled: AtomicBool,
    /// The queued `async_run_on_cpu` work item, taken by the vCPU at its
    /// next safe point (QEMU: `process_queued_cpu_work`).
    work_queued: AtomicBool,
    /// `cpu->stop`.
    stop: AtomicBool,
    /// `cpu->halt_cond`, with its mutex standing in for the BQL.
    halt: (Mutex<()>, Condvar),
}

/// The VM-wide throttle: a percentage, a timer thread, per-vCPU flags.
pub struct LegacyThrottle {
    /// `throttle_percentage`.
    throttle_percentage: AtomicU32,
    timeslice_ns: u64,
    vcpus: Vec<LegacyVcpu>,
    /// Wakes the timer thread for `cpu_throttle_set`'s immediate tick and
    /// for shutdown.
    timer_wake: (Mutex<bool>, Condvar),
    shutdown: AtomicBool,
}

impl std::fmt::Debug for LegacyThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyThrottle")
            .field("throttle_percentage", &self.throttle_percentage.load(Ordering::Relaxed))
            .field("timeslice_ns", &self.timeslice_ns)
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

impl LegacyThrottle {
    /// A throttle for `nr_vcpus`, with its timer thread (QEMU's main loop
    /// running `throttle_timer`). Stop it with [`shutdown`](Self::shutdown).
    pub fn start(nr_vcpus: usize, timeslice_ns: u64) -> (Arc<Self>, JoinHandle<()>) {
        let t = Arc::new(LegacyThrottle {
            throttle_percentage: AtomicU32::new(0),
            timeslice_ns,
            vcpus: (0..nr_vcpus)
                .map(|_| LegacyVcpu {
                    throttle_thread_scheduled: AtomicBool::new(false),
                    work_queued: AtomicBool::new(false),
                    stop: AtomicBool::new(false),
                    halt: (Mutex::new(()), Condvar::new()),
                })
                .collect(),
            timer_wake: (Mutex::new(false), Condvar::new()),
            shutdown: AtomicBool::new(false),
        });
        let t2 = t.clone();
        let h = thread::spawn(move || t2.timer_thread());
        (t, h)
    }

    /// `cpu_throttle_get_percentage`.
    pub fn get(&self) -> u32 {
        // Relaxed: as QEMU's qatomic_read; the value is the only datum.
        self.throttle_percentage.load(Ordering::Relaxed)
    }

    /// `cpu_throttle_set`: clamps to 1..=99; an inactive throttle ticks now.
    pub fn set(&self, pct: u32) {
        let active = self.get() != 0;
        let pct = pct.clamp(CPU_THROTTLE_PCT_MIN, CPU_THROTTLE_PCT_MAX);
        // Relaxed: as QEMU's qatomic_set.
        self.throttle_percentage.store(pct, Ordering::Relaxed);
        if !active {
            let (m, cv) = &self.timer_wake;
            *m.lock().unwrap() = true;
            cv.notify_one();
        }
    }

    /// `cpu_throttle_stop`.
    pub fn stop(&self) {
        // Relaxed: as QEMU's qatomic_set.
        self.throttle_percentage.store(0, Ordering::Relaxed);
    }

    /// Ends the timer thread (join its handle afterwards).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        let (m, cv) = &self.timer_wake;
        *m.lock().unwrap() = true;
        cv.notify_one();
    }

    /// Sets `cpu->stop` for a vCPU (VM stop) and wakes its throttle sleep.
    pub fn stop_vcpu(&self, vcpu: usize, stop: bool) {
        let v = &self.vcpus[vcpu];
        v.stop.store(stop, Ordering::Release);
        let _g = v.halt.0.lock().unwrap();
        v.halt.1.notify_all();
    }

    /// `cpu_throttle_timer_tick`: queues the sleep on every vCPU not still
    /// scheduled; returns when to tick next, or `None` (timer not re-armed).
    fn timer_tick(&self) -> Option<Duration> {
        if self.get() == 0 {
            return None;
        }
        for v in &self.vcpus {
            // AcqRel: as QEMU's qatomic_xchg (a full barrier); pairs with
            // the Release clear at the end of `cpu_throttle_thread`.
            if !v.throttle_thread_scheduled.swap(true, Ordering::AcqRel) {
                // Release: publishes the work item; pairs with the Acquire
                // swap in `safe_point`.
                v.work_queued.store(true, Ordering::Release);
            }
        }
        let pct = f64::from(self.get()) / 100.0;
        Some(Duration::from_nanos((self.timeslice_ns as f64 / (1.0 - pct)) as u64))
    }

    fn timer_thread(&self) {
        let (m, cv) = &self.timer_wake;
        let mut next: Option<Instant> = None;
        loop {
            // Wait for the armed deadline, or for `set`/`shutdown`.
            let mut woken = m.lock().unwrap();
            loop {
                if *woken {
                    break;
                }
                match next {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break;
                        }
                        woken = cv.wait_timeout(woken, d - now).unwrap().0;
                    }
                    None => woken = cv.wait(woken).unwrap(),
                }
            }
            let was_woken = std::mem::replace(&mut *woken, false);
            drop(woken);
            // Acquire: pairs with the Release store in `shutdown()`.
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            // A `set` wake-up on an armed timer does not tick (QEMU only
            // ticks from `set` when the throttle was inactive, and then
            // the timer is not armed).
            if was_woken && next.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            // timer_mod(now + period): measured from when the tick ran.
            next = self.timer_tick().map(|p| Instant::now() + p);
        }
    }

    /// Called by vCPU `vcpu`'s thread at a safe point (QEMU: the vCPU
    /// thread processing its queued work after leaving KVM_RUN). Runs
    /// `cpu_throttle_thread` if a tick queued it. Returns true if it slept.
    pub fn safe_point(&self, vcpu: usize) -> bool {
        let v = &self.vcpus[vcpu];
        // Relaxed fast path: most calls find nothing queued; the Acquire
        // swap below does the synchronisation when something is.
        if !v.work_queued.load(Ordering::Relaxed) {
            return false;
        }
        // Acquire: pairs with the Release store in `timer_tick`.
        if !v.work_queued.swap(false, Ordering::Acquire) {
            return false;
        }
        self.cpu_throttle_thread(v);
        true
    }

    /// `cpu_throttle_thread`. As in QEMU 7.2, the early return when the
    /// percentage is 0 leaves `throttle_thread_scheduled` set, so after
    /// `cpu_throttle_stop` a vCPU whose work was still queued is skipped by
    /// every later tick (reproduced, not fixed).
    fn cpu_throttle_thread(&self, v: &LegacyVcpu) {
        if self.get() == 0 {
            return;
        }
        {
            let pct = f64::from(self.get()) / 100.0;
            let throttle_ratio = pct / (1.0 - pct);
            // "Add 1ns to fix double's rounding error (like 0.9999999...)"
            let mut sleeptime_ns = (throttle_ratio * self.timeslice_ns as f64 + 1.0) as i64;
            let endtime = Instant::now() + Duration::from_nanos(sleeptime_ns as u64);
            while sleeptime_ns > 0 && !v.stop.load(Ordering::Acquire) {
                if sleeptime_ns > SCALE_MS {
                    // qemu_cond_timedwait_iothread(cpu->halt_cond, ms)
                    let g = v.halt.0.lock().unwrap();
                    let ms = (sleeptime_ns / SCALE_MS) as u64;
                    drop(v.halt.1.wait_timeout(g, Duration::from_millis(ms)).unwrap());
                } else {
                    // g_usleep(us)
                    thread::sleep(Duration::from_micros((sleeptime_ns / SCALE_US) as u64));
                }
                let now = Instant::now();
                sleeptime_ns = if now >= endtime { 0 } else { (endtime - now).as_nanos() as i64 };
            }
        }
        // Release: as QEMU's qatomic_set after the sleep; pairs with the
        // AcqRel swap in `timer_tick`.
        v.throttle_thread_scheduled.store(false, Ordering::Release);
    }
}
