//! Dirty-page tracking as KVM's dirty ring does it, feeding the migration's
//! dirty bitmap.
//!
//! * Every guest page starts write-protected when logging starts
//!   ([`DirtyLog::start`]). The first write to a protected page is a
//!   write-protect fault: KVM unprotects the page and pushes its number into
//!   the writing vCPU's dirty ring. Further writes are free until the page
//!   is protected again. [`VcpuDirty::wrote`] models that with one atomic
//!   read-modify-write per write.
//! * The reaper ([`DirtyLog::reap`], QEMU's `kvm_dirty_ring_reap`) harvests
//!   each ring, re-protects the harvested pages (`KVM_RESET_DIRTY_RINGS`) and
//!   only then sets them in the shared dirty bitmap (`KVMSlot::dirty_bmap`).
//! * The migration thread's sync ([`DirtyLog::sync_into`], QEMU's
//!   `migration_bitmap_sync`) reaps once more and moves the shared bitmap
//!   into its own.
//!
//! The rings are `vmig_legacy::kvm_dirty_ring` (soft-full limit,
//! ring-full exit that stalls the vCPU until a harvest).
//!
//! # Why no write is lost
//!
//! The vCPU writes the page, then does P1 (`fetch_and` clearing the protect
//! bit, AcqRel). The reaper re-protects with R1 (`fetch_or`, AcqRel), then
//! publishes with R2 (`fetch_or` on the dirty bitmap, Release); the
//! migration thread takes the word with M1 (`swap`, Acquire) and only then
//! reads the page. Both P1 and R1 are read-modify-writes of the same word,
//! so one comes first in its modification order:
//! * R1 before P1: P1 reads the bit set, so the vCPU pushes the page again
//!   and a later harvest resends it (the ring's Release/Acquire pair orders
//!   the page data before the harvest).
//! * P1 before R1: R1 reads P1's value, so P1 (Release) synchronises with R1
//!   (Acquire): the vCPU's write happens-before R1, hence before R2, M1 and
//!   the migration thread's read of the page, which therefore sees it.

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::bitmap::{AtomicBitmap, PageBitmap};
use crate::kvm_dirty_ring::{dirty_ring, DirtyRingConfig, PushOutcome, ReaperRing, StatsHandle, VcpuRing};

/// The shared half of dirty tracking.
pub struct DirtyLog {
    protect: AtomicBitmap,
    dirty: AtomicBitmap,
    rings: Mutex<Reaping>,
    stats: Vec<StatsHandle>,
    /// `--dirty-tracking ring`: harvested pages go to this scheduler
    /// instead of the dirty bitmap.
    scheduler: Option<vmig::dirty::DirtyMarker>,
}

struct Reaping {
    rings: Vec<ReaperRing>,
    scratch: Vec<NonZeroUsize>,
    /// Ring mode: the harvested pages of one ring, re-protected, to mark.
    harvest: Vec<u64>,
    /// Ring-full events already reported to the reaper controller.
    full_seen: u64,
}

/// What one reap found (the reaper controller's inputs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reaped {
    /// Entries in the fullest ring.
    pub max_fill: u64,
    /// Entries in all rings.
    pub total: u64,
    /// Ring-full exits since the previous reap.
    pub full_events: u64,
}

/// One vCPU's end of dirty tracking.
pub struct VcpuDirty {
    ring: VcpuRing,
}

impl DirtyLog {
    /// Tracking for `pages` pages and `vcpus` rings of `ring_size` entries.
    pub fn new(pages: u64, vcpus: u32, ring_size: u32) -> Result<(DirtyLog, Vec<VcpuDirty>), String> {
        let mut rings = Vec::new();
        let mut vcpu_ends = Vec::new();
        let mut stats = Vec::new();
        for _ in 0..vcpus {
            let (v, r) = dirty_ring(DirtyRingConfig::kvm(ring_size)).map_err(|e| format!("dirty ring: {e}"))?;
            stats.push(r.stats_handle());
            rings.push(r);
            vcpu_ends.push(VcpuDirty { ring: v });
        }
        let log = DirtyLog {
            protect: AtomicBitmap::new(pages),
            dirty: AtomicBitmap::new(pages),
            rings: Mutex::new(Reaping { rings, scratch: Vec::new(), harvest: Vec::new(), full_seen: 0 }),
            stats,
            scheduler: None,
        };
        Ok((log, vcpu_ends))
    }

    /// Starts dirty logging: write-protects every page. The caller treats
    /// every page as dirty for the first pass.
    pub fn start(&self) {
        // S1 (AcqRel RMW per word): write-protect everything. Pairs with P1
        // in `VcpuDirty::wrote`, like R1: a vCPU write whose P1 came before
        // S1 in the word's modification order happens-before S1, hence
        // before the migration thread's first read of the page (same
        // thread); a P1 after S1 finds the page protected and logs it.
        self.protect.set_all(Ordering::AcqRel);
    }

    /// Harvests every ring: re-protects the pages, then marks them dirty.
    pub fn reap(&self) -> Reaped {
        let mut g = self.rings.lock();
        let Reaping { rings, scratch, harvest, full_seen } = &mut *g;
        let mut out = Reaped::default();
        for ring in rings.iter_mut() {
            scratch.clear();
            let n = u64::from(ring.harvest(scratch));
            out.total += n;
            out.max_fill = out.max_fill.max(n);
            harvest.clear();
            for p in scratch.iter() {
                let page = (p.get() - 1) as u64;
                let (w, bit) = ((page / 64) as usize, 1u64 << (page % 64));
                // R1 (AcqRel): re-protect; pairs with P1 in `VcpuDirty::wrote`.
                self.protect.word(w).fetch_or(bit, Ordering::AcqRel);
                if self.scheduler.is_some() {
                    harvest.push(page);
                    continue;
                }
                // R2 (Release): publish the dirty page; pairs with M1 in
                // `sync_into`.
                self.dirty.word(w).fetch_or(bit, Ordering::Release);
            }
            if let Some(s) = &self.scheduler {
                // Ring mode: the scheduler's Q1 (Release, after R1) takes
                // R2's place and its Q2 M1's (vmig::dirty module doc).
                crate::ring_tracking::deliver(s, harvest);
            }
        }
        let full: u64 = self.stats.iter().map(|s| s.stats().ring_full_events()).sum();
        out.full_events = full - *full_seen;
        *full_seen = full;
        out
    }

    /// Ring mode: harvested pages go to `scheduler` from now on.
    pub fn feed_scheduler(&mut self, scheduler: vmig::dirty::DirtyMarker) {
        self.scheduler = Some(scheduler);
    }

    /// QEMU's migration_bitmap_sync: reaps, then moves every harvested page
    /// into `bmap`. Returns the pages newly dirty in `bmap`.
    pub fn sync_into(&self, bmap: &mut PageBitmap) -> u64 {
        self.reap();
        let mut new = 0;
        for w in 0..self.dirty.words() {
            // M1 (Acquire): pairs with R2 in `reap`; the page data written
            // before R2 is visible to the migration thread's read.
            let bits = self.dirty.word(w).swap(0, Ordering::Acquire);
            if bits != 0 {
                new += bmap.or_word(w, bits);
            }
        }
        new
    }

    /// Stops harvesting: a vCPU stalled on a full ring returns at once.
    pub fn close(&self) {
        for r in self.rings.lock().rings.iter() {
            r.close();
        }
    }

    /// Ring-full exits so far, all vCPUs.
    pub fn ring_full_events(&self) -> u64 {
        self.stats.iter().map(|s| s.stats().ring_full_events()).sum()
    }

    /// Total vCPU stall on ring-full exits, all vCPUs.
    pub fn stall(&self) -> std::time::Duration {
        self.stats.iter().map(|s| s.stats().stall()).sum()
    }

    /// Peak fill any harvest saw.
    pub fn peak_fill(&self) -> u64 {
        self.stats.iter().map(|s| s.stats().max_fill()).max().unwrap_or(0)
    }

    /// Entries pushed into all rings.
    pub fn pushed(&self) -> u64 {
        // Relaxed: a statistic (RingStats' rule).
        self.stats.iter().map(|s| s.stats().pushed.load(Ordering::Relaxed)).sum()
    }

    fn protect_word(&self, w: usize) -> &std::sync::atomic::AtomicU64 {
        self.protect.word(w)
    }
}

impl VcpuDirty {
    /// Call after writing `page`: takes the write-protect fault if the page
    /// was protected (pushes it into this vCPU's ring, maybe a ring-full
    /// exit that stalls until the reaper harvests; `kick` wakes the reaper).
    pub fn wrote(&mut self, log: &DirtyLog, page: u64, kick: impl FnOnce()) -> PushOutcome {
        let (w, bit) = ((page / 64) as usize, 1u64 << (page % 64));
        // P1 (AcqRel): unprotect; pairs with R1 in `DirtyLog::reap` (see the
        // module doc for why this loses no write).
        let old = log.protect_word(w).fetch_and(!bit, Ordering::AcqRel);
        if old & bit == 0 {
            return PushOutcome::Pushed;
        }
        // page + 1: the ring carries NonZeroUsize.
        self.ring.push(NonZeroUsize::new(page as usize + 1).expect("page + 1 > 0"), kick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_is_logged_once_until_reaped() {
        let (log, mut v) = DirtyLog::new(256, 1, 1024).unwrap();
        log.start();
        let mut bmap = PageBitmap::new(256);
        for _ in 0..3 {
            v[0].wrote(&log, 5, || {});
            v[0].wrote(&log, 200, || {});
        }
        assert_eq!(log.pushed(), 2);
        assert_eq!(log.sync_into(&mut bmap), 2);
        assert!(bmap.test(5) && bmap.test(200));
        // Re-protected by the reap: the next write is logged again.
        v[0].wrote(&log, 5, || {});
        assert_eq!(log.pushed(), 3);
        assert_eq!(log.sync_into(&mut bmap), 0, "already in the migration bitmap");
    }
}
