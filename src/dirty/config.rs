//! The scheduler's shape, and how the background interval K is derived.
//!
//! K is how often the background cursor must be served: at least one pick
//! in every K goes to it while it has pages left. The argument, with the
//! measurements, is in docs/dirty.md ("Deriving K"); in short:
//!
//! * Let N be the guest's pages. If the queue never empties, the
//!   background still gets one pick in K, so the first pass ends within
//!   `K * N` picks: a bound in picks.
//! * A pick is not a unit of time. A queued page is a page the guest wrote
//!   (a full page on the wire); a background page of an idle or large
//!   guest is mostly a zero page (QEMU sends a 9-byte record). With `t_b`
//!   the cost of a background page and `t_q` that of a queued one, the
//!   first pass takes up to `N * t_b + (K - 1) * N * t_q`. Asking that it
//!   take at most `1 + e` times the undisturbed pass `N * t_b` gives
//!   `K <= 1 + e * t_b / t_q`.
//! * `t_b / t_q` is about 9 / 4105 for unpopulated memory, so for any
//!   tolerance `e` below several hundred the bound is K = 1: the cursor
//!   gets every pick until the first pass is over, and then only the
//!   queue remains (Peter Xu's loop with ENFORCE_BACKGROUND_COUNT = 1).
//!   The engine cannot know `t_b / t_q` for a given guest, so the default
//!   takes the bound that holds for every guest. Nothing is lost meanwhile:
//!   marks of pages already sent wait in the queue and the overflow set,
//!   each page once, and go out right after the first pass.
//! * A VMM that knows its pages cost alike (`t_b = t_q`, a fully populated
//!   guest) and wants recently dirtied pages sent sooner sets K = 1 + e,
//!   e.g. 2 for a first pass at most twice as long.
//!
//! Measured in vmig-sim (docs/dirty.md): with K = 2, a 16 GiB guest with
//! 1 GiB populated took 46% longer than the bitmap design, from re-sending
//! hot pages during the first pass; with K = 1 it sent fewer bytes than
//! the bitmap design.

use crate::error::{Error, Result};
use crate::ring::raw::{MAX_CAPACITY, MIN_CAPACITY};

/// Default K = 1: the first pass never takes longer than an undisturbed
/// pass over RAM, whatever pages cost (module doc; docs/dirty.md#deriving-k).
pub const DEFAULT_FIRST_PASS_STRETCH: u32 = 1;

/// Shape of a dirty-page scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyConfig {
    /// Guest pages, at least 1. Every page starts pending.
    pub nr_pages: u64,
    /// Slots in the queue of marked pages: a power of two in 2..=2^30.
    pub queue_capacity: u32,
    /// The background interval K: while the first pass has pages left, at
    /// least one pick in every K goes to it, so the first pass ends within
    /// K * nr_pages picks even when the queue never empties (module doc for
    /// how to choose it). At least 1.
    pub first_pass_stretch: u32,
}

impl DirtyConfig {
    /// `nr_pages` and `queue_capacity` with the default stretch.
    pub fn new(nr_pages: u64, queue_capacity: u32) -> Self {
        DirtyConfig { nr_pages, queue_capacity, first_pass_stretch: DEFAULT_FIRST_PASS_STRETCH }
    }

    /// The background interval K: the background gets at least one pick
    /// in every K while it has pages left.
    pub fn background_interval(&self) -> u32 {
        self.first_pass_stretch
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.nr_pages == 0 {
            return Err(Error::InvalidArgument("nr_pages must be at least 1"));
        }
        // Pages travel through the ring as `page + 1` in a usize.
        if usize::try_from(self.nr_pages).is_err() || self.nr_pages == u64::MAX {
            return Err(Error::InvalidArgument("nr_pages does not fit this machine's addresses"));
        }
        let c = self.queue_capacity;
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c) || !c.is_power_of_two() {
            return Err(Error::InvalidArgument("queue_capacity must be a power of two in 2..=2^30"));
        }
        if self.first_pass_stretch == 0 {
            return Err(Error::InvalidArgument("first_pass_stretch must be at least 1"));
        }
        Ok(())
    }
}
