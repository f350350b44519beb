//! The seams between the simulated migration and the engines that carry it:
//! compression, decompression, the reaper interval controller and the vCPU
//! throttle. Each has a vmig implementation and a legacy (QEMU 7.2 design)
//! one, chosen per run by [`crate::config::Stack`].

use crate::dirty::Reaped;

/// Why a page could not be queued for compression.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// One compression result.
pub enum CompOut<'a> {
    /// The page was all zero: send a zero-page record.
    Zero,
    /// One zlib stream of the page.
    Data(&'a [u8]),
    /// The worker failed (e.g. a caught panic): resend the page raw.
    Failed(i32),
}

/// Counters for the `info migrate` compression section.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompStats {
    /// Pages compressed (zero pages included).
    pub pages: u64,
    /// Pages found all zero by the workers.
    pub zero_pages: u64,
    /// Submissions refused because every worker was busy.
    pub busy: u64,
    /// Bytes of zlib output produced.
    pub bytes_out: u64,
}

/// A page compressor run by the migration thread.
pub trait Compressor: Send {
    /// Queues page `key` (at `page`) for compression. With `wait` false,
    /// returns `Busy` when no worker can take it now.
    ///
    /// # Safety
    /// `page` is readable for PAGE_SIZE bytes until this key's result has
    /// been handed to a `poll`/`wait_result` callback.
    unsafe fn submit(&mut self, key: u64, page: *const u8, wait: bool) -> Result<(), Busy>;
    /// Hands one ready result to `f`; false if none was ready.
    fn poll(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool;
    /// Like `poll` but blocks until a result is ready; false only when
    /// nothing is in flight.
    fn wait_result(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool;
    /// Whether results for one page may be reordered across rounds, so the
    /// migration thread must drain everything at the end of each round
    /// (QEMU 7.2's flush_compressed_data in find_dirty_block).
    fn needs_round_flush(&self) -> bool;
    /// Statistics so far.
    fn stats(&self) -> CompStats;
}

/// A page decompressor run by the destination's stream thread.
pub trait Decompressor: Send {
    /// Queues `zdata` (copied) to be inflated into `dest`.
    ///
    /// # Safety
    /// `dest` is writable for PAGE_SIZE bytes and nothing else writes it
    /// until the next `wait` returns.
    unsafe fn submit(&mut self, zdata: &[u8], dest: *mut u8) -> Result<(), String>;
    /// Blocks until every queued page is written; the first error since the
    /// previous wait, if any.
    fn wait(&mut self) -> Result<(), String>;
}

/// The reaper interval controller.
pub trait ReaperCtl: Send + Sync {
    /// Feeds one reap's findings; returns the next interval in microseconds.
    fn update(&self, reaped: Reaped) -> u64;
    /// Sleeps the current interval; true if ended early by `kick`.
    fn wait(&self) -> bool;
    /// Ends the current or next `wait` early (a vCPU hit a full ring).
    fn kick(&self);
}

/// The auto-converge throttle.
pub trait GuestThrottle: Send + Sync {
    /// Sets the throttle percentage (0 = off, 1..=99).
    fn set(&self, pct: u32);
    /// The current percentage.
    fn get(&self) -> u32;
    /// Called by vCPU `vcpu` at a safe point: sleeps whatever it owes.
    fn vcpu_run(&self, vcpu: u32);
    /// Ends any throttle sleep now (VM stop).
    fn kick_all(&self);
}
