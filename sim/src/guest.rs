//! The running guest: vCPU threads writing memory, and the dirty-ring reaper
//! thread.
//!
//! Each vCPU runs the seed's workload ("multiple threads repeatedly writing
//! the memory"): it writes a 64-byte record into a random page of the
//! working set, `dirty_rate` times per second of *running* time. Time a vCPU
//! spends throttled or stalled on a full dirty ring is time the guest does
//! not run, so it does not count toward the rate: a 30% throttle cuts the
//! guest's writes by 30%, and the report's guest-write rate shows what the
//! migration cost the guest.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::PAGE_SIZE;
use crate::dirty::{DirtyLog, VcpuDirty};
use crate::engines::{GuestThrottle, ReaperCtl};
use crate::kvm_dirty_ring::PushOutcome;
use crate::memory::GuestRam;
use crate::prng::SplitMix64;

/// What the vCPUs do.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Writes per second of running time, per vCPU.
    pub rate: u64,
    /// First page of the working set.
    pub ws_start: u64,
    /// Pages in the working set.
    pub ws_pages: u64,
    /// PRNG seed.
    pub seed: u64,
}

/// Shared between the guest's threads and the migration thread.
pub struct GuestShared {
    /// Guest RAM.
    pub ram: Arc<GuestRam>,
    /// Dirty tracking.
    pub log: Arc<DirtyLog>,
    /// The throttle.
    pub throttle: Arc<dyn GuestThrottle>,
    /// The reaper controller.
    pub reaper: Arc<dyn ReaperCtl>,
    /// Set to stop the vCPUs (vm_stop).
    pub stop_vcpus: AtomicBool,
    /// Set to stop the reaper thread.
    pub stop_reaper: AtomicBool,
    /// Guest writes so far, all vCPUs. Relaxed: a statistic.
    pub writes: AtomicU64,
    /// Reaper wake-ups so far. Relaxed: a statistic.
    pub reaper_wakeups: AtomicU64,
}

/// Guest running threads.
pub struct Guest {
    /// State shared with the threads.
    pub shared: Arc<GuestShared>,
    vcpus: Vec<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

/// How many writes a vCPU does between safe points: 2 ms of work at the
/// configured rate, so a 10 ms throttle timeslice sees several safe points.
pub(crate) fn batch_for(rate: u64) -> u64 {
    (rate / 500).max(1)
}

impl Guest {
    /// Starts the vCPU and reaper threads.
    pub fn start(shared: Arc<GuestShared>, vcpu_ends: Vec<VcpuDirty>, w: Workload) -> std::io::Result<Guest> {
        let mut vcpus = Vec::new();
        for (id, end) in vcpu_ends.into_iter().enumerate() {
            let s = shared.clone();
            vcpus.push(
                std::thread::Builder::new()
                    .name(format!("vcpu/{id}"))
                    .spawn(move || vcpu_loop(&s, id as u32, end, w))?,
            );
        }
        let s = shared.clone();
        let reaper = std::thread::Builder::new().name("reaper".into()).spawn(move || reaper_loop(&s))?;
        Ok(Guest { shared, vcpus, reaper: Some(reaper) })
    }

    /// vm_stop: stops every vCPU and waits until they have stopped. A vCPU
    /// stalled on a full ring is released by reaping (the reaper thread still
    /// runs); a throttled one is kicked.
    pub fn stop_vcpus(&mut self) {
        // Relaxed: only a request; `join` below orders everything the vCPUs
        // did before the caller goes on.
        self.shared.stop_vcpus.store(true, Ordering::Relaxed);
        self.shared.throttle.kick_all();
        for h in self.vcpus.drain(..) {
            while !h.is_finished() {
                self.shared.throttle.kick_all();
                self.shared.reaper.kick();
                std::thread::sleep(Duration::from_micros(200));
            }
            h.join().expect("vCPU thread panicked");
        }
    }

    /// Stops the reaper thread.
    pub fn stop_reaper(&mut self) {
        // Relaxed: only a request; `join` below orders the reaper's work.
        self.shared.stop_reaper.store(true, Ordering::Relaxed);
        if let Some(h) = self.reaper.take() {
            while !h.is_finished() {
                self.shared.reaper.kick();
                std::thread::sleep(Duration::from_micros(200));
            }
            h.join().expect("reaper thread panicked");
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.shared.log.close();
        self.stop_vcpus();
        self.stop_reaper();
    }
}

fn vcpu_loop(s: &GuestShared, id: u32, mut dirty: VcpuDirty, w: Workload) {
    let mut rng = SplitMix64::new(w.seed, 0x5CC0 + u64::from(id));
    let batch = batch_for(w.rate);
    let per_batch = Duration::from_nanos(batch * 1_000_000_000 / w.rate.max(1));
    let mut deadline = Instant::now();
    let mut counter = 0u64;
    // Relaxed: a stop request carries no data (the stopper joins us).
    'run: while !s.stop_vcpus.load(Ordering::Relaxed) {
        // Safe point: the throttle takes its share here. Time asleep is not
        // guest running time, so the schedule moves by it.
        let t = Instant::now();
        s.throttle.vcpu_run(id);
        deadline += t.elapsed();
        for _ in 0..batch {
            let page = w.ws_start + rng.below(w.ws_pages);
            counter += 1;
            let slot = (rng.next_u64() % (PAGE_SIZE as u64 / 64)) as usize;
            let rec = [counter, page, u64::from(id), counter.wrapping_mul(0x9E37_79B9), 0, 0, 0, 0];
            let p = s.ram.page_ptr(page) as *mut u64;
            for (i, v) in rec.iter().enumerate() {
                // SAFETY: slot*8 + i < PAGE_SIZE/8 words: inside the page.
                // Volatile: other threads read guest memory concurrently
                // (module doc of `memory`).
                unsafe { std::ptr::write_volatile(p.add(slot * 8 + i), *v) };
            }
            match dirty.wrote(&s.log, page, || s.reaper.kick()) {
                PushOutcome::Pushed => {}
                PushOutcome::FullExit(stall) => deadline += stall,
                PushOutcome::Closed => break 'run,
            }
        }
        // Relaxed: a statistic.
        s.writes.fetch_add(batch, Ordering::Relaxed);
        pace(&mut deadline, per_batch);
    }
}

/// How far behind its schedule a paced vCPU may fall before it stops
/// trying to catch up: 10 batches of 2 ms. A vCPU starved of CPU (or, in
/// postcopy, faulting) must not then write faster than its rate for long,
/// which would make the dirty rate a function of the host's load.
const MAX_CATCH_UP: Duration = Duration::from_millis(20);

/// Waits for the end of the next batch of a vCPU paced at one batch per
/// `per_batch` (the guests of sim/src/guest.rs and sim/src/postcopy/vcpu.rs).
pub(crate) fn pace(deadline: &mut Instant, per_batch: Duration) {
    *deadline += per_batch;
    let now = Instant::now();
    if *deadline > now {
        std::thread::sleep(*deadline - now);
    } else if now - *deadline > MAX_CATCH_UP {
        *deadline = now - MAX_CATCH_UP;
    }
}

fn reaper_loop(s: &GuestShared) {
    // Relaxed (both loads): a stop request carries no data (the stopper
    // joins us).
    while !s.stop_reaper.load(Ordering::Relaxed) {
        s.reaper.wait();
        if s.stop_reaper.load(Ordering::Relaxed) {
            break;
        }
        let r = s.log.reap();
        s.reaper.update(r);
        // Relaxed: a statistic.
        s.reaper_wakeups.fetch_add(1, Ordering::Relaxed);
    }
}
