//! The seams between the simulated migration and the engines that carry it:
//! compression, decompression, the reaper interval controller and the vCPU
//! throttle. Each has a vmig implementation and a legacy (QEMU 7.2 design)
//! one, chosen per run by [`crate::config::Stack`]. Both compression engines
//! implement `vmig_legacy::CompressEngine`, so one adapter,
//! [`EngineCompressor`], serves both.

use vmig_legacy::{CompressEngine, CompressedPage};

use crate::dirty::Reaped;

/// Why a page could not be queued for compression.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No worker can take it now: send the page raw (QEMU's "compression
    /// busy"), or collect a result and retry.
    Busy,
    /// The engine failed (out of memory, a bad argument): the migration
    /// fails with this message.
    Failed(String),
}

/// One compression result.
pub enum CompOut<'a> {
    /// The page was all zero: send a zero-page record.
    Zero,
    /// One zlib stream of the page.
    Data(&'a [u8]),
    /// The worker failed (e.g. a caught panic): resend the page raw.
    Failed(i32),
}

/// Counters for the `info migrate` compression section: vmig's own, which
/// the legacy replica keeps too.
pub use vmig::pool::CompStats;

/// A page compressor run by the migration thread.
pub trait Compressor: Send {
    /// Queues page `key` (at `page`) for compression. With `wait` false,
    /// returns `SubmitError::Busy` when no worker can take it now; a real
    /// failure is `SubmitError::Failed` and ends the migration.
    ///
    /// # Safety
    /// `page` is readable for PAGE_SIZE bytes until this key's result has
    /// been handed to a `poll`/`wait_result` callback.
    unsafe fn submit(&mut self, key: u64, page: *const u8, wait: bool) -> Result<(), SubmitError>;
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
    /// Whether the throttle keeps a due time per vCPU
    /// ([`vcpu_due_ns`](Self::vcpu_due_ns)), so a VMM kicks each vCPU when
    /// its sleep falls due; otherwise it kicks every vCPU once per
    /// timeslice (QEMU's VM-wide throttle timer).
    fn per_vcpu_due(&self) -> bool {
        false
    }
    /// When vCPU `vcpu` must next reach a safe point, CLOCK_MONOTONIC ns
    /// (0: now), or `None` (off, or asleep); only if
    /// [`per_vcpu_due`](Self::per_vcpu_due).
    fn vcpu_due_ns(&self, _vcpu: u32) -> Option<u64> {
        None
    }
}

/// The one compressor adapter: a [`CompressEngine`] (vmig's pool or the
/// legacy replica) as the migration thread's [`Compressor`].
#[derive(Debug)]
pub struct EngineCompressor<E> {
    engine: E,
    /// Names the engine in error messages ("vmig compression pool").
    name: &'static str,
}

impl<E: CompressEngine> EngineCompressor<E> {
    /// Wraps `engine`; `name` prefixes its error messages.
    pub fn wrap(engine: E, name: &'static str) -> Self {
        EngineCompressor { engine, name }
    }

    /// Hands `r`, if any, to `f` and its buffer back to the engine; whether
    /// there was one.
    fn hand(&mut self, r: Option<E::Page>, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool {
        let Some(r) = r else { return false };
        let out = if r.status() != 0 {
            CompOut::Failed(r.status())
        } else if r.is_zero_page() {
            CompOut::Zero
        } else {
            CompOut::Data(r.data())
        };
        f(r.key(), out);
        self.engine.release(r);
        true
    }
}

impl<E: CompressEngine + Send> Compressor for EngineCompressor<E> {
    unsafe fn submit(&mut self, key: u64, page: *const u8, wait: bool) -> Result<(), SubmitError> {
        // SAFETY: forwarded: the caller keeps the page mapped until its
        // result is handed out.
        match unsafe { self.engine.submit(page, key, 0, wait) } {
            Ok(()) => Ok(()),
            Err(vmig::Error::Busy) => Err(SubmitError::Busy),
            Err(e) => Err(SubmitError::Failed(format!("{}: {e}", self.name))),
        }
    }

    fn poll(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool {
        let r = self.engine.poll();
        self.hand(r, f)
    }

    fn wait_result(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool {
        let r = self.engine.wait_result();
        self.hand(r, f)
    }

    fn needs_round_flush(&self) -> bool {
        !self.engine.ordered_per_key()
    }

    fn stats(&self) -> CompStats {
        self.engine.stats()
    }
}

#[cfg(test)]
mod tests {
    use vmig::pool::{CompConfig, CompPool, CompResult};

    use super::*;
    use crate::config::{SimConfig, Stack, PAGE_SIZE};
    use crate::content::Corpus;
    use crate::legacy_engines::LegacyCompressor;
    use crate::vmig_engines::VmigComp;

    fn submit_err(c: &mut dyn Compressor, page: *const u8) -> SubmitError {
        // SAFETY: only called with NULL, which both engines reject before
        // reading anything.
        unsafe { c.submit(0, page, false) }.unwrap_err()
    }

    /// A pool error other than Busy (here a bad argument) is a failure with
    /// the engine's message, not Busy: the page must not silently go raw.
    #[test]
    fn a_real_engine_error_is_not_busy() {
        let mut vmig = VmigComp::new(1, 1).unwrap();
        let mut legacy = LegacyCompressor::new(1, 1).unwrap();
        for (c, name) in [(&mut vmig as &mut dyn Compressor, "vmig compression pool"), (&mut legacy, "legacy compression threads")] {
            match submit_err(c, std::ptr::null()) {
                SubmitError::Failed(m) => assert!(m.starts_with(name) && m.contains("NULL"), "{m}"),
                SubmitError::Busy => panic!("{name}: a NULL page reported as Busy"),
            }
        }
    }

    /// vmig's pool that runs out of memory after `ok` submissions, as an
    /// allocation failure mid-migration would.
    struct OutOfMemoryAfter {
        pool: CompPool,
        ok: u32,
    }

    impl CompressEngine for OutOfMemoryAfter {
        type Page = CompResult;
        unsafe fn submit(&mut self, page: *const u8, key: u64, opaque: usize, wait: bool) -> vmig::Result<()> {
            if self.ok == 0 {
                return Err(vmig::Error::OutOfMemory);
            }
            self.ok -= 1;
            // SAFETY: forwarded contract.
            unsafe { self.pool.submit(page, key, opaque, wait) }
        }
        fn poll(&mut self) -> Option<CompResult> {
            self.pool.poll()
        }
        fn wait_result(&mut self) -> Option<CompResult> {
            self.pool.wait_result()
        }
        fn release(&mut self, page: CompResult) {
            self.pool.release(page)
        }
        fn flush(&mut self) -> vmig::Result<()> {
            self.pool.flush()
        }
        fn stats(&self) -> CompStats {
            self.pool.stats()
        }
        fn ordered_per_key(&self) -> bool {
            true
        }
    }

    /// Out of memory in the compressor fails the whole migration with that
    /// message (before: every page after it went raw and the run "completed").
    #[test]
    fn out_of_memory_fails_the_migration_with_its_message() {
        let cfg = SimConfig { stack: Stack::Vmig, mem_bytes: 16 << 20, working_set_bytes: 2 << 20, max_time_s: 30.0, ..SimConfig::default() };
        let pool = CompPool::new(&CompConfig { threads: 1, level: 1, page_size: PAGE_SIZE as u32, ring_depth: 0 }).unwrap();
        let comp = EngineCompressor::wrap(OutOfMemoryAfter { pool, ok: 100 }, "vmig compression pool");
        let r = crate::run::run_with_compressor(&cfg, &Corpus::load(), Some(Box::new(comp)), &mut |_| {}).expect("set-up");
        assert_eq!(r.status, "failed", "{}", r.info_migrate());
        let detail = r.status_detail.as_deref().unwrap_or("");
        assert!(detail.contains("vmig compression pool: out of memory"), "{detail}");
    }
}
