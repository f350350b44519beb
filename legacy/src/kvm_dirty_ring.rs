//! A simulated per-vCPU KVM dirty ring, built on the vmig SPSC ring.
//!
//! Used by `benches/reaper.rs` and `vmig-sim` (unit tests: `cargo test -p vmig-legacy`);
//! it depends only on `std` and `vmig::ring`.
//!
//! # What it models
//!
//! KVM's dirty ring (`virt/kvm/dirty_ring.c`, `Documentation/virt/kvm/api.rst`
//! "KVM_CAP_DIRTY_LOG_RING") gives every vCPU its own ring of dirty-page
//! entries. The vCPU (KVM, on its behalf) pushes one entry per newly dirtied
//! page; userspace (QEMU's reaper thread, `kvm_dirty_ring_reaper_thread`)
//! collects them and calls `KVM_RESET_DIRTY_RINGS` to hand the slots back.
//! When a push leaves the ring at or above its *soft limit* —
//! `size - KVM_DIRTY_RING_RSVD_ENTRIES - kvm_cpu_dirty_log_size()`, the
//! reserve absorbing writes already in flight (e.g. a PML buffer flush) —
//! the vCPU exits to userspace with `KVM_EXIT_DIRTY_RING_FULL` and cannot
//! re-enter the guest until the ring has been harvested and reset.
//!
//! Here:
//!
//! * [`VcpuRing::push`] is the vCPU side: it enqueues a page number; if the
//!   ring is now at or above the soft limit it counts a ring-full exit, calls
//!   the caller's `on_full` closure (the VMM kicks its reaper there, e.g.
//!   `vmig_reaper_kick`), and blocks until the reaper has harvested the ring,
//!   measuring the stall.
//! * [`ReaperRing::harvest`] is the reaper side: it takes every published
//!   entry (collect + reset in one step), reports how many it found (the
//!   ring's fill at this reap), tracks the peak, and releases a stalled vCPU.
//! * [`RingStats`] holds the counters both sides update; anyone may read it.
//!
//! Differences from KVM, on purpose: harvest and reset are one step (KVM
//! needs a second ioctl, which only adds a constant); a page is a
//! `NonZeroUsize` (KVM stores slot + offset; callers offset page 0 by one);
//! duplicate pages are not filtered (neither does KVM: one entry per
//! write-protect fault).
//!
//! # Synchronisation
//!
//! Entries travel through the lockless `vmig::ring` SPSC ring (its own
//! Release/Acquire pairs cover the page data). The stall hand-off uses a
//! `std::sync::Mutex` + `Condvar`: the vCPU re-checks "ring below soft limit
//! or closed" under the mutex before waiting, and the reaper takes the mutex
//! after dequeuing and before notifying. So a harvest that lands between the
//! vCPU's push and its wait is seen under the lock (the lock orders the
//! reaper's dequeue before the vCPU's re-check), and one that lands after
//! the re-check cannot notify before the vCPU is waiting: no lost wake-up.
//! The counters in [`RingStats`] are statistics read after the threads are
//! joined or as snapshots; they use Relaxed (see each field).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vmig::ring::{Consumer, Producer};

/// `KVM_DIRTY_RING_RSVD_ENTRIES` in `include/linux/kvm_dirty_ring.h`: the
/// entries KVM keeps in reserve above the soft limit.
pub const KVM_DIRTY_RING_RSVD_ENTRIES: u32 = 64;

/// Shape of one simulated ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyRingConfig {
    /// Entries in the ring: a power of two (KVM requires one too; QEMU's
    /// `dirty-ring-size` accepts 1024..=65536, 4096 being the usual choice).
    pub capacity: u32,
    /// A push that leaves this many entries or more in the ring is a
    /// ring-full exit. `1..=capacity`.
    pub soft_limit: u32,
}

impl DirtyRingConfig {
    /// KVM's shape for `capacity` entries: soft limit =
    /// `capacity - KVM_DIRTY_RING_RSVD_ENTRIES` (x86 with PML reserves a
    /// further 512 entries; pass an explicit config to model that). For a
    /// ring of 128 entries or fewer the reserve is scaled to a quarter of
    /// the ring so a small simulated ring still has a usable soft limit.
    pub fn kvm(capacity: u32) -> Self {
        let rsvd = KVM_DIRTY_RING_RSVD_ENTRIES.min(capacity / 4);
        DirtyRingConfig { capacity, soft_limit: capacity - rsvd }
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.capacity < 2 || !self.capacity.is_power_of_two() {
            return Err("capacity must be a power of two >= 2");
        }
        if self.soft_limit == 0 || self.soft_limit > self.capacity {
            return Err("soft_limit must be in 1..=capacity");
        }
        Ok(())
    }
}

/// Counters for one ring. All Relaxed: they are statistics, no data is
/// handed off through them; a reader wanting exact totals reads them after
/// joining the vCPU and reaper threads (`join` orders everything).
#[derive(Debug, Default)]
pub struct RingStats {
    /// Entries pushed by the vCPU. Written only by the vCPU.
    pub pushed: AtomicU64,
    /// Entries harvested by the reaper. Written only by the reaper.
    pub harvested: AtomicU64,
    /// Ring-full exits (pushes that reached the soft limit). Monotonic: a VMM
    /// wanting "events since the last reap" keeps the previous value.
    pub ring_full_events: AtomicU64,
    /// Nanoseconds the vCPU spent stalled on ring-full exits (from the exit
    /// to being released by a harvest).
    pub stall_ns: AtomicU64,
    /// Most entries found by one harvest (peak fill seen by the reaper).
    pub max_fill: AtomicU64,
    /// Harvests that found at least one entry.
    pub harvests: AtomicU64,
}

impl RingStats {
    /// Ring-full exits so far.
    pub fn ring_full_events(&self) -> u64 {
        self.ring_full_events.load(Ordering::Relaxed)
    }
    /// Total stall so far.
    pub fn stall(&self) -> Duration {
        Duration::from_nanos(self.stall_ns.load(Ordering::Relaxed))
    }
    /// Peak fill found by a harvest so far.
    pub fn max_fill(&self) -> u64 {
        self.max_fill.load(Ordering::Relaxed)
    }
}

/// State both sides share for the stall hand-off.
#[derive(Debug)]
struct Shared {
    cfg: DirtyRingConfig,
    stats: RingStats,
    /// Set by [`ReaperRing::close`] (or its drop): no more harvests will
    /// come, so a stalled vCPU must not wait. Written under `lock` (the
    /// mutex orders it); the atomic only lets `push` skip the lock.
    closed: AtomicBool,
    /// Guards nothing but the wait condition; see the module doc.
    lock: Mutex<()>,
    released: Condvar,
}

/// What one [`VcpuRing::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The entry is in the ring and the vCPU keeps running.
    Pushed,
    /// The entry is in the ring, it reached the soft limit, the vCPU exited
    /// and stalled this long until a harvest released it.
    FullExit(Duration),
    /// The reaper side is gone; the entry may or may not have been taken.
    Closed,
}

/// The vCPU end of a simulated dirty ring. `Send`, one owner.
#[derive(Debug)]
pub struct VcpuRing {
    tx: Producer<NonZeroUsize>,
    shared: Arc<Shared>,
}

/// The reaper end of a simulated dirty ring. `Send`, one owner.
#[derive(Debug)]
pub struct ReaperRing {
    rx: Consumer<NonZeroUsize>,
    shared: Arc<Shared>,
    /// Scratch for `harvest` callers that only want the count.
    scratch: Vec<NonZeroUsize>,
}

/// Creates one simulated per-vCPU dirty ring.
pub fn dirty_ring(cfg: DirtyRingConfig) -> Result<(VcpuRing, ReaperRing), &'static str> {
    cfg.check()?;
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(cfg.capacity).map_err(|_| "ring allocation failed")?;
    let shared = Arc::new(Shared {
        cfg,
        stats: RingStats::default(),
        closed: AtomicBool::new(false),
        lock: Mutex::new(()),
        released: Condvar::new(),
    });
    Ok((
        VcpuRing { tx, shared: shared.clone() },
        ReaperRing { rx, shared, scratch: Vec::with_capacity(cfg.capacity as usize) },
    ))
}

impl VcpuRing {
    /// Records one dirty page. If the ring reaches the soft limit, counts a
    /// ring-full exit, calls `on_full` (kick the reaper there), and blocks
    /// until the reaper has harvested the ring (or closed it).
    pub fn push(&mut self, page: NonZeroUsize, on_full: impl FnOnce()) -> PushOutcome {
        // Acquire: pairs with the Release store in `ReaperRing::close`, so a
        // vCPU that sees `closed` also sees everything before it.
        if self.shared.closed.load(Ordering::Acquire) {
            return PushOutcome::Closed;
        }
        if let Err(page) = self.tx.enqueue(page) {
            // Unreachable while every push stops at the soft limit (<=
            // capacity); kept total: exit, wait for a harvest, retry once.
            let out = self.full_exit(on_full);
            if out == PushOutcome::Closed || self.tx.enqueue(page).is_err() {
                return PushOutcome::Closed;
            }
            // Relaxed: statistic written only by this thread (see RingStats).
            self.shared.stats.pushed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
        // Relaxed: statistic written only by this thread (see RingStats).
        self.shared.stats.pushed.fetch_add(1, Ordering::Relaxed);
        // `count` is exact for the producer's own index and may over-count
        // if the consumer's index is stale: at worst an early exit by a
        // harvest already in flight, which the re-check in `full_exit` ends.
        if self.tx.count() >= self.shared.cfg.soft_limit {
            return self.full_exit(on_full);
        }
        PushOutcome::Pushed
    }

    fn full_exit(&mut self, on_full: impl FnOnce()) -> PushOutcome {
        let stats = &self.shared.stats;
        // Relaxed: statistic (see RingStats).
        stats.ring_full_events.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        on_full();
        let soft = self.shared.cfg.soft_limit;
        let mut guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Re-checked under the lock: see the module doc for why this cannot
        // miss a harvest.
        while self.tx.count() >= soft && !self.shared.closed.load(Ordering::Relaxed) {
            guard = self.shared.released.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        let closed = self.shared.closed.load(Ordering::Relaxed);
        drop(guard);
        let stall = t0.elapsed();
        // Relaxed: statistic (see RingStats).
        stats.stall_ns.fetch_add(stall.as_nanos() as u64, Ordering::Relaxed);
        if closed {
            PushOutcome::Closed
        } else {
            PushOutcome::FullExit(stall)
        }
    }

    /// Entries in the ring now (a snapshot).
    pub fn fill(&self) -> u32 {
        self.tx.count()
    }

    /// The ring's shape.
    pub fn config(&self) -> DirtyRingConfig {
        self.shared.cfg
    }

    /// This ring's counters.
    pub fn stats(&self) -> &RingStats {
        &self.shared.stats
    }
}

impl ReaperRing {
    /// Collects and resets: moves every published entry onto the end of
    /// `out` and returns how many there were (the ring's fill at this reap).
    /// Releases the vCPU if it is stalled on a ring-full exit.
    pub fn harvest(&mut self, out: &mut Vec<NonZeroUsize>) -> u32 {
        let n = self.rx.dequeue_burst(out, self.shared.cfg.capacity);
        let stats = &self.shared.stats;
        if n > 0 {
            // Relaxed: statistics written only by this thread (see RingStats).
            stats.harvested.fetch_add(u64::from(n), Ordering::Relaxed);
            stats.harvests.fetch_add(1, Ordering::Relaxed);
            stats.max_fill.fetch_max(u64::from(n), Ordering::Relaxed);
            // Taking the lock orders the dequeue above before a stalled
            // vCPU's re-check (module doc). A harvest that took entries may
            // have released a stalled vCPU, so it always notifies.
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.released.notify_all();
        }
        n
    }

    /// [`harvest`](Self::harvest) discarding the page numbers.
    pub fn harvest_count(&mut self) -> u32 {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let n = self.harvest(&mut scratch);
        self.scratch = scratch;
        n
    }

    /// Entries in the ring now (a snapshot).
    pub fn fill(&self) -> u32 {
        self.rx.count()
    }

    /// The ring's shape.
    pub fn config(&self) -> DirtyRingConfig {
        self.shared.cfg
    }

    /// This ring's counters.
    pub fn stats(&self) -> &RingStats {
        &self.shared.stats
    }

    /// A handle on the counters that outlives this end (for reporting).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.shared.clone())
    }

    /// Stops harvesting: a vCPU stalled now or later returns
    /// [`PushOutcome::Closed`] instead of waiting forever. Idempotent.
    pub fn close(&self) {
        let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Release: pairs with the Acquire load at the top of `push`.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.released.notify_all();
    }
}

impl Drop for ReaperRing {
    fn drop(&mut self) {
        self.close();
    }
}

/// Read-only access to one ring's [`RingStats`], from any thread.
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    /// The counters.
    pub fn stats(&self) -> &RingStats {
        &self.0.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n + 1).unwrap()
    }

    #[test]
    fn soft_limit_exit_stalls_until_harvest() {
        let (mut v, mut r) = dirty_ring(DirtyRingConfig { capacity: 8, soft_limit: 4 }).unwrap();
        for i in 0..3 {
            assert_eq!(v.push(page(i), || panic!("no exit below the soft limit")), PushOutcome::Pushed);
        }
        let t = std::thread::spawn(move || {
            let mut kicked = false;
            let out = v.push(page(3), || kicked = true);
            (out, kicked, v)
        });
        // Wait until the vCPU has exited, then harvest.
        while r.stats().ring_full_events() == 0 {
            std::thread::yield_now();
        }
        let mut got = Vec::new();
        assert_eq!(r.harvest(&mut got), 4);
        let (out, kicked, v) = t.join().unwrap();
        assert!(matches!(out, PushOutcome::FullExit(_)));
        assert!(kicked);
        assert_eq!(got, (0..4).map(page).collect::<Vec<_>>());
        assert_eq!(v.stats().max_fill(), 4);
        assert_eq!(v.fill(), 0);
    }

    #[test]
    fn close_releases_a_stalled_vcpu() {
        let (mut v, r) = dirty_ring(DirtyRingConfig { capacity: 2, soft_limit: 1 }).unwrap();
        let t = std::thread::spawn(move || v.push(page(0), || {}));
        while r.stats().ring_full_events() == 0 {
            std::thread::yield_now();
        }
        drop(r);
        assert_eq!(t.join().unwrap(), PushOutcome::Closed);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(dirty_ring(DirtyRingConfig { capacity: 6, soft_limit: 4 }).is_err());
        assert!(dirty_ring(DirtyRingConfig { capacity: 8, soft_limit: 0 }).is_err());
        assert!(dirty_ring(DirtyRingConfig { capacity: 8, soft_limit: 9 }).is_err());
        assert_eq!(DirtyRingConfig::kvm(4096).soft_limit, 4096 - 64);
        assert_eq!(DirtyRingConfig::kvm(64).soft_limit, 48);
    }
}
