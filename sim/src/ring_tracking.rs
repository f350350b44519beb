//! `--dirty-tracking ring`: migration driven by `vmig::dirty`'s scheduler.
//!
//! The reaper re-protects each harvested page (KVM_RESET_DIRTY_RINGS) and
//! then marks it into the scheduler with [`deliver`] — no dirty bitmap is
//! set, synced or walked. The migration thread takes pages with
//! `DirtyTaker::next`: pages dirtied since they were sent first, the
//! background pass over RAM at least every K picks (docs/dirty.md).
//!
//! Ordering: the vCPU's write happens-before the reaper's R1 (sim
//! `dirty.rs`), R1 is sequenced before the scheduler's Q1 (Release) and
//! the migration thread's Q2 (Acquire) precedes its read of the page, so
//! the read sees the write (the scheduler's argument, `vmig::dirty`).

use serde::Serialize;
use vmig::dirty::{scheduler, DirtyConfig, DirtyMarker, DirtyStats, DirtyTaker};

use crate::config::{DirtyTracking, SimConfig};
use crate::dirty::DirtyLog;

/// Hands pages a reaper harvested and re-protected to the scheduler: the
/// one call a reaper makes in ring mode (the simulated guest's reaper and
/// the KVM guest's). Every page must be a guest page.
pub fn deliver(scheduler: &DirtyMarker, pages: &[u64]) {
    let n = scheduler.mark_burst(pages);
    // A harvest holds guest pages only (the rings are sized to the guest):
    // a page outside it is a bug in the harvester.
    assert_eq!(n, pages.len(), "harvested page {} outside guest RAM", pages[n.min(pages.len() - 1)]);
}

/// In ring mode, creates the scheduler, points the reaper at it and
/// returns the migration thread's half; None in bitmap mode.
pub fn attach(cfg: &SimConfig, log: &mut DirtyLog) -> Result<Option<DirtyTaker>, String> {
    Ok(scheduler_for(cfg)?.map(|(marker, taker)| {
        log.feed_scheduler(marker);
        taker
    }))
}

/// In ring mode, the scheduler's two halves for `cfg`'s guest: the
/// reaper's marker and the migration thread's taker; None in bitmap mode.
pub fn scheduler_for(cfg: &SimConfig) -> Result<Option<(DirtyMarker, DirtyTaker)>, String> {
    if cfg.dirty_tracking != DirtyTracking::Ring {
        return Ok(None);
    }
    let config = DirtyConfig {
        first_pass_stretch: cfg.first_pass_stretch,
        ..DirtyConfig::new(cfg.nr_pages(), cfg.dirty_queue_capacity())
    };
    scheduler(&config).map(Some).map_err(|e| format!("dirty scheduler: {e}"))
}

/// The scheduler's counters in the report (ring mode).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SchedulerSummary {
    /// Queue entries.
    pub queue_capacity: u32,
    /// K: the background pass gets at least one pick in K.
    pub background_interval: u32,
    /// Pages marked by the reaper.
    pub marks: u64,
    /// Marks of pages already queued (suppressed).
    pub duplicates: u64,
    /// Marks that found the queue full (went to the overflow set).
    pub overflowed: u64,
    /// Pages handed to the migration thread.
    pub handed_out: u64,
    /// Of those, from the background pass.
    pub from_background: u64,
    /// Of those, from the overflow set.
    pub from_overflow: u64,
    /// Entries dropped because the background pass had sent the page since.
    pub stale: u64,
    /// Entries left to the background pass.
    pub deferred: u64,
}

impl SchedulerSummary {
    /// From the scheduler's counters.
    pub fn new(queue_capacity: u32, s: &DirtyStats) -> Self {
        SchedulerSummary {
            queue_capacity,
            background_interval: s.background_interval,
            marks: s.marks,
            duplicates: s.duplicates,
            overflowed: s.overflowed,
            handed_out: s.handed_out,
            from_background: s.from_background,
            from_overflow: s.from_overflow,
            stale: s.stale,
            deferred: s.deferred,
        }
    }
}
