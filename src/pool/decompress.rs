//! The decompression pool: zlib streams in, pages written to their
//! destinations.
//!
//! Each input must be one complete zlib stream (RFC 1950) that inflates to
//! exactly `page_size` bytes with no trailing bytes; anything else (corrupt,
//! truncated, oversized, wrong length) fails with `-EBADMSG` and leaves the
//! destination untouched: a worker inflates into its own buffer and copies to
//! `dest` only on success, so nothing is ever written outside
//! `dest[0..page_size)`. QEMU 7.2's `qemu_uncompress_data()` accepted any
//! length; we are stricter because a short page would leave stale guest
//! memory behind silently.
//!
//! Submissions for the same `dest` are applied in submission order (a
//! destination still in flight is routed to the worker holding it).

use super::backend::{self, Backend, PageInflater};
use super::config::{check_page_size, check_threads, compress_bound, PoolOptions, DEFAULT_RING_DEPTH};
use super::job::Slot;
use super::worker::{Engine, Work};
use crate::error::{Error, Result};

/// Payload of one decompression slot.
#[derive(Debug)]
pub(crate) struct DecompJob {
    dest: *mut u8,
    /// Copy of the caller's input; capacity `max_input`, allocated once.
    input: Vec<u8>,
    status: i32,
}

// SAFETY: `dest` is written only by the one worker holding the slot, and the
// caller of `DecompPool::submit` promised it stays valid until `wait`.
unsafe impl Send for DecompJob {}

struct DecompWork {
    z: Box<dyn PageInflater>,
    page: Vec<u8>,
}

impl Work for DecompWork {
    type Job = DecompJob;

    fn run(&mut self, job: &mut DecompJob) {
        if !self.z.inflate(&job.input, &mut self.page) {
            job.status = Error::BadMessage("").to_neg_errno();
            return;
        }
        // SAFETY: the caller of `DecompPool::submit` guarantees `dest` is
        // valid for `page_size` bytes of writes and not accessed by anyone
        // else until `wait`; `page` is exactly `page_size` long. `dest` is
        // guest RAM: written with volatile stores, as every guest access.
        unsafe { crate::guest_mem::copy_to_guest(job.dest, &self.page) };
        job.status = 0;
    }

    fn fail(job: &mut DecompJob) {
        job.status = Error::Internal("").to_neg_errno();
    }
}

/// The decompression pool.
///
/// **Thread-safety**: `Send`, not `Sync`; one thread at a time submits and
/// waits (QEMU's main/load thread).
pub struct DecompPool {
    engine: Engine<DecompJob>,
    // Boxed on purpose: the boxes themselves travel through the rings.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Slot<DecompJob>>>,
    page_size: u32,
    max_input: usize,
    /// First error since the last `wait`.
    error: Option<Error>,
}

impl std::fmt::Debug for DecompPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecompPool").field("threads", &self.engine.threads()).field("in_flight", &self.engine.in_flight()).finish()
    }
}

impl DecompPool {
    /// Starts `threads` workers named `vmig-decomp/N` (ring depth
    /// [`DEFAULT_RING_DEPTH`]).
    ///
    /// ```
    /// use vmig::pool::DecompPool;
    /// let pool = DecompPool::new(2, 4096).unwrap();
    /// assert_eq!(pool.page_size(), 4096);
    /// assert!(DecompPool::new(0, 4096).is_err());
    /// ```
    pub fn new(threads: u32, page_size: u32) -> Result<DecompPool> {
        Self::with_options(threads, page_size, &PoolOptions::default())
    }

    /// [`new`](Self::new) with options; `options.backend` `None` picks
    /// [`Backend::default_inflater`] (every inflater accepts every
    /// backend's streams).
    ///
    /// ```
    /// use vmig::pool::{Backend, DecompPool, PoolOptions};
    /// let o = PoolOptions { backend: Some(Backend::ZlibRs), ..Default::default() };
    /// assert!(DecompPool::with_options(1, 4096, &o).is_ok());
    /// ```
    pub fn with_options(threads: u32, page_size: u32, options: &PoolOptions) -> Result<DecompPool> {
        check_threads(threads)?;
        check_page_size(page_size)?;
        options.validate()?;
        let backend = options.backend.unwrap_or_else(Backend::default_inflater);
        let engine = Engine::new(threads, DEFAULT_RING_DEPTH, options.spin_ns, "vmig-decomp", |_| {
            let mut page = Vec::new();
            page.try_reserve_exact(page_size as usize).map_err(|_| Error::OutOfMemory)?;
            page.resize(page_size as usize, 0);
            Ok(DecompWork { z: backend::inflater(backend)?, page })
        })?;
        // Level 0 output is the largest a zlib stream of one page can be.
        let max_input = compress_bound(page_size);
        let mut free = Vec::new();
        free.try_reserve_exact(engine.max_in_flight()).map_err(|_| Error::OutOfMemory)?;
        for _ in 0..engine.max_in_flight() {
            let mut input = Vec::new();
            input.try_reserve_exact(max_input).map_err(|_| Error::OutOfMemory)?;
            free.push(Box::new(Slot {
                key: 0,
                worker: 0,
                job: DecompJob { dest: std::ptr::null_mut(), input, status: 0 },
            }));
        }
        Ok(DecompPool { engine, free, page_size, max_input, error: None })
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Largest input accepted: `compressBound(page_size)`.
    ///
    /// ```
    /// use vmig::pool::{compress_bound, DecompPool};
    /// let pool = DecompPool::new(1, 4096).unwrap();
    /// assert_eq!(pool.max_input(), compress_bound(4096));
    /// ```
    pub fn max_input(&self) -> usize {
        self.max_input
    }

    /// Queues `zdata` (copied) to be inflated into `dest`. Blocks (spin, then
    /// sleep) while the chosen worker's ring is full.
    ///
    /// `Err(InvalidArgument)` for a NULL `dest`; `Err(BadMessage)` for input
    /// longer than [`max_input`](Self::max_input) (also remembered for
    /// `wait`). Errors found by workers are reported by [`wait`](Self::wait).
    ///
    /// # Safety
    /// `dest` is valid for writes of `page_size` bytes, and not read or
    /// written by anyone else, until `wait` returns (or the pool is dropped).
    ///
    /// ```
    /// use flate2::{Compress, Compression, FlushCompress};
    /// use vmig::pool::DecompPool;
    /// let page = vec![42u8; 4096];
    /// let mut z = Vec::with_capacity(4200);
    /// Compress::new(Compression::new(1), true).compress_vec(&page, &mut z, FlushCompress::Finish).unwrap();
    /// let mut pool = DecompPool::new(1, 4096).unwrap();
    /// let mut dest = vec![0u8; 4096];
    /// // SAFETY: `dest` is a page nothing else touches until `wait` returns.
    /// unsafe { pool.submit(&z, dest.as_mut_ptr()) }.unwrap();
    /// pool.wait().unwrap();
    /// assert_eq!(dest, page);
    /// ```
    pub unsafe fn submit(&mut self, zdata: &[u8], dest: *mut u8) -> Result<()> {
        if dest.is_null() {
            return Err(Error::InvalidArgument("dest is NULL"));
        }
        if zdata.len() > self.max_input {
            let e = Error::BadMessage("input longer than compressBound(page_size)");
            self.error.get_or_insert(e.clone());
            return Err(e);
        }
        while let Some(slot) = self.engine.poll() {
            self.reap(slot);
        }
        let mut slot = loop {
            if let Some(s) = self.free.pop() {
                break s;
            }
            // Every slot is in flight: wait for one to come back.
            match self.engine.wait_one() {
                Some(s) => self.reap(s),
                None => unreachable!("no free slot and nothing in flight"),
            }
        };
        slot.key = dest as usize as u64;
        slot.job.dest = dest;
        slot.job.input.clear();
        slot.job.input.extend_from_slice(zdata);
        loop {
            match self.engine.submit(slot, true) {
                Ok(()) => return Ok(()),
                // Busy with wait=true only when max_in_flight results are
                // uncollected: collect one and retry.
                Err((_, s)) => {
                    slot = s;
                    if let Some(done) = self.engine.wait_one() {
                        self.reap(done);
                    }
                }
            }
        }
    }

    fn reap(&mut self, mut slot: Box<Slot<DecompJob>>) {
        match slot.job.status {
            0 => {}
            s if s == -libc::EBADMSG => {
                self.error.get_or_insert(Error::BadMessage("corrupt, truncated or wrong-length zlib stream"));
            }
            _ => {
                self.error.get_or_insert(Error::Internal("decompression worker failed"));
            }
        }
        slot.job.dest = std::ptr::null_mut();
        self.free.push(slot);
    }

    /// Blocks until every submitted page is applied; returns the first error
    /// since the previous `wait`, and clears it.
    ///
    /// ```
    /// use flate2::{Compress, Compression, FlushCompress};
    /// use vmig::pool::DecompPool;
    /// let page = vec![42u8; 4096];
    /// let mut z = Vec::with_capacity(4200);
    /// Compress::new(Compression::new(1), true).compress_vec(&page, &mut z, FlushCompress::Finish).unwrap();
    /// let mut pool = DecompPool::new(1, 4096).unwrap();
    /// let mut dest = vec![0u8; 4096];
    /// z[2] ^= 0xff; // corrupt the stream
    /// // SAFETY: as for `submit`.
    /// unsafe { pool.submit(&z, dest.as_mut_ptr()) }.unwrap();
    /// assert!(pool.wait().is_err(), "the bad page is reported by the next wait");
    /// ```
    pub fn wait(&mut self) -> Result<()> {
        while let Some(slot) = self.engine.wait_one() {
            self.reap(slot);
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress, Status};

    fn deflate(page: &[u8], level: u32) -> Vec<u8> {
        let mut z = Compress::new(Compression::new(level), true);
        let mut out = Vec::with_capacity(compress_bound(page.len() as u32));
        assert_eq!(z.compress_vec(page, &mut out, FlushCompress::Finish).unwrap(), Status::StreamEnd);
        out
    }

    #[test]
    fn applies_in_order_and_reports_errors() {
        let mut pool = DecompPool::new(2, 4096).unwrap();
        let mut dest = vec![0u8; 4096 * 4];
        let versions: Vec<Vec<u8>> = (0..50u8).map(|v| vec![v; 4096]).collect();
        let zs: Vec<Vec<u8>> = versions.iter().map(|p| deflate(p, 1)).collect();
        for z in &zs {
            for d in 0..4 {
                // SAFETY: `dest` outlives `wait` below; pages do not overlap.
                unsafe { pool.submit(z, dest.as_mut_ptr().add(d * 4096)).unwrap() };
            }
        }
        pool.wait().unwrap();
        assert!(dest.iter().all(|&b| b == 49), "last version must win");

        let mut bad = zs[3].clone();
        bad.truncate(bad.len() - 1);
        // SAFETY: as above.
        unsafe { pool.submit(&bad, dest.as_mut_ptr()).unwrap() };
        assert!(matches!(pool.wait(), Err(Error::BadMessage(_))));
        assert!(dest[..4096].iter().all(|&b| b == 49), "dest untouched on error");
        pool.wait().unwrap();
        let short = deflate(&[1u8; 100], 1);
        // SAFETY: as above.
        unsafe { pool.submit(&short, dest.as_mut_ptr()).unwrap() };
        assert!(matches!(pool.wait(), Err(Error::BadMessage(_))));
        let huge = vec![0u8; pool.max_input() + 1];
        // SAFETY: as above.
        assert!(matches!(unsafe { pool.submit(&huge, dest.as_mut_ptr()) }, Err(Error::BadMessage(_))));
        assert!(matches!(pool.wait(), Err(Error::BadMessage(_))));
        pool.wait().unwrap();
    }
}
