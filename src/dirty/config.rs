//! The scheduler's shape, and how the background interval K is derived.
//!
//! K is how often the background cursor must be served: at least one pick
//! in every K goes to it while it has pages left. The argument, with the
//! numbers, is in docs/dirty.md ("Deriving K"); in short:
//!
//! * Let N be the guest's pages and R the pages per second the migration
//!   thread sends. If the ring never empties (the guest re-dirties pages
//!   at least as fast as they are sent), the background still gets one
//!   pick in K, so the first pass ends within `K * N` picks, `K * N / R`
//!   seconds: K is exactly the bound on how much longer than an
//!   undisturbed pass over RAM the first pass may take.
//! * The bitmap design (QEMU) cannot converge before it has sent RAM once
//!   and then once more what the first pass left dirty: two passes, at
//!   most `2 * N` pages. K = 2 makes the ring design's worst case equal to
//!   that: its first pass ends within `2 * N / R` whatever the guest does,
//!   and meanwhile up to N queued pages went out as well, which the bitmap
//!   design would still have to send. A larger K only delays the first
//!   pass further in exactly the case (a guest outrunning the link) where
//!   the extra ring picks are re-sends of hot pages that will be dirty
//!   again; a smaller K (1) would starve the queue until the first pass is
//!   over, which is the bitmap design's order.
//!
//! So the default is [`DEFAULT_FIRST_PASS_STRETCH`] = 2, and K is that
//! stretch: `K = first_pass_stretch`.

use crate::error::{Error, Result};
use crate::ring::raw::{MAX_CAPACITY, MIN_CAPACITY};

/// Default bound on the first pass: at most twice an undisturbed pass over
/// RAM when the ring never empties (module doc; docs/dirty.md#deriving-k).
pub const DEFAULT_FIRST_PASS_STRETCH: u32 = 2;

/// Shape of a dirty-page scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyConfig {
    /// Guest pages, at least 1. Every page starts pending.
    pub nr_pages: u64,
    /// Slots in the queue of marked pages: a power of two in 2..=2^30.
    pub queue_capacity: u32,
    /// Bound on how many times longer than one undisturbed pass over RAM
    /// the first pass may take when the queue never empties; the
    /// background interval K equals it (module doc). At least 1.
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
