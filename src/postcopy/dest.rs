//! The destination of a postcopy migration: guest RAM registered with
//! userfaultfd, faults turned into page requests, pages placed atomically
//! and exactly once, waiters woken, request latency measured.
//!
//! The engine knows only a memory region and the threads that touch it: a
//! simulated vCPU writing the mapping and a KVM vCPU faulting inside
//! `KVM_RUN` both block in the kernel on a missing page until
//! [`PostcopyDest::place`] installs it.
//!
//! # Per-page state and its ordering
//!
//! Three [`PageMap`]s, each bit set once by [`PageMap::claim`]:
//!
//! * `received`: set by the one thread that will place the page (or by
//!   [`PostcopyDest::mark_present`] for a page that arrived in precopy). A
//!   page arriving both as an answer and in the background stream is placed
//!   by whichever claims first; the other copy is dropped (`duplicates`).
//! * `placed`: set after `UFFDIO_COPY` returned, so the page is mapped.
//! * `requested`: set by the fault service the first time any thread faults
//!   on the page; later faults on it (other vCPUs) send no new request.
//!
//! Orderings (labels used in the code):
//!
//! * Q1 (Release, store of `req_ns[page]`) before the request leaves; L1
//!   (Acquire, load in `place`) reads it. A placer that runs before Q1 sees
//!   0 and records no latency: the page beat its own request.
//! * P1: `placed` is claimed (AcqRel) after the copy; the fault service's
//!   `test` (Acquire) of `placed` then knows the page is mapped and only
//!   needs `UFFDIO_WAKE` for a thread whose fault raced the copy.
//! * M1 (AcqRel, `missing` decrement): the thread that brings it to 0 sees
//!   every other placement's decrement; `remaining() == 0` means every page
//!   is mapped.
//! * F1 (Release, `failed`) before `UFFDIO_UNREGISTER`; F2 (Acquire,
//!   [`PostcopyDest::is_failed`]). See [`PostcopyDest::fail`].

use std::io;
use std::time::Instant;

use super::latency::{LatencyHistogram, LatencySummary};
use super::pagemap::PageMap;
use super::uffd::{Fill, Uffd};
use crate::error::{Error, Result};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What [`PostcopyDest::place`] did with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// This call placed the page and woke its waiters.
    Placed,
    /// The page was already received (an answer and the background copy
    /// both arrived, or it came in precopy): the data was dropped.
    Duplicate,
}

/// Counters of a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestCounters {
    /// Fault messages read.
    pub faults: u64,
    /// Page requests issued (one per page, however many threads wait).
    pub requests: u64,
    /// Pages placed by this engine.
    pub placed: u64,
    /// Copies dropped because the page was already received.
    pub duplicates: u64,
    /// Placements that found the page already mapped (EEXIST).
    pub already_mapped: u64,
    /// Wake-ups issued for faults that raced a finished placement.
    pub stale_wakes: u64,
}

/// Postcopy destination state for one guest RAM region.
#[derive(Debug)]
pub struct PostcopyDest {
    uffd: Uffd,
    base: usize,
    len: usize,
    page_size: usize,
    received: PageMap,
    placed: PageMap,
    requested: PageMap,
    /// Request time per page, ns since `t0` plus 1 (0 = not requested).
    req_ns: Box<[AtomicU64]>,
    t0: Instant,
    missing: AtomicU64,
    failed: AtomicBool,
    hist: LatencyHistogram,
    faults: AtomicU64,
    requests: AtomicU64,
    placed_n: AtomicU64,
    duplicates: AtomicU64,
    already_mapped: AtomicU64,
    stale_wakes: AtomicU64,
}

impl PostcopyDest {
    /// Registers `[base, base + len)` with a new userfaultfd in missing mode.
    /// Every page counts as missing until placed or
    /// [`mark_present`](Self::mark_present)ed. Pages already populated stay
    /// readable (missing mode only traps unpopulated pages); drop stale ones
    /// first (`madvise(MADV_DONTNEED)`, what QEMU does with the discard
    /// bitmap).
    ///
    /// Errors: `InvalidArgument` for a NULL, unaligned or empty region or a
    /// page size that is not the host's; `Os` when userfaultfd cannot be
    /// opened or the range registered (`EPERM`/`ENOSYS`: not available).
    ///
    /// # Safety
    /// The region is an anonymous private mapping (or shmem/hugetlbfs) that
    /// stays mapped until this value is dropped.
    pub unsafe fn new(base: *mut u8, len: usize, page_size: usize) -> Result<PostcopyDest> {
        // SAFETY: sysconf has no preconditions.
        let host = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if base.is_null() || len == 0 || page_size != host || base as usize % host != 0 || len % host != 0 {
            return Err(Error::InvalidArgument("region must be non-empty and aligned to the host page size"));
        }
        let uffd = Uffd::open().map_err(|e| Error::os(&e, "userfaultfd"))?;
        uffd.register(base as usize, len).map_err(|e| Error::os(&e, "UFFDIO_REGISTER"))?;
        let pages = (len / page_size) as u64;
        Ok(PostcopyDest {
            uffd,
            base: base as usize,
            len,
            page_size,
            received: PageMap::new(pages),
            placed: PageMap::new(pages),
            requested: PageMap::new(pages),
            req_ns: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            t0: Instant::now(),
            missing: AtomicU64::new(pages),
            failed: AtomicBool::new(false),
            hist: LatencyHistogram::default(),
            faults: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            placed_n: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            already_mapped: AtomicU64::new(0),
            stale_wakes: AtomicU64::new(0),
        })
    }

    /// Pages in the region.
    pub fn pages(&self) -> u64 {
        self.received.pages()
    }

    fn check(&self, page: u64) -> Result<usize> {
        if page >= self.pages() {
            return Err(Error::InvalidArgument("page outside the registered region"));
        }
        Ok(self.base + page as usize * self.page_size)
    }

    fn done_one(&self, page: u64) {
        // P1 (AcqRel claim): the page is mapped; see the module doc.
        self.placed.claim(page);
        // M1 (AcqRel): see the module doc.
        self.missing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records that `page` is already in place (it arrived before the
    /// switch). Returns false if it was already received.
    pub fn mark_present(&self, page: u64) -> Result<bool> {
        self.check(page)?;
        if !self.received.claim(page) {
            return Ok(false);
        }
        self.done_one(page);
        Ok(true)
    }

    /// Places `data` (one page) at `page` with `UFFDIO_COPY` unless the page
    /// was already received, and wakes the threads waiting for it. Any
    /// number of threads may place concurrently; each page is placed once.
    ///
    /// Errors: `InvalidArgument` for a page out of range or `data` not one
    /// page; `Os` if the copy failed (`ESHUTDOWN` after [`fail`](Self::fail)).
    pub fn place(&self, page: u64, data: &[u8]) -> Result<Placement> {
        let addr = self.check(page)?;
        if data.len() != self.page_size {
            return Err(Error::InvalidArgument("data must be exactly one page"));
        }
        // SAFETY: `data` is a live slice of exactly the copied length.
        self.place_with(page, addr, |u| unsafe { u.copy(addr, data.as_ptr(), data.len()) })
    }

    /// As [`place`](Self::place) for an all-zero page (`UFFDIO_ZEROPAGE`).
    pub fn place_zero(&self, page: u64) -> Result<Placement> {
        let addr = self.check(page)?;
        let len = self.page_size;
        self.place_with(page, addr, |u| u.zeropage(addr, len))
    }

    fn place_with(&self, page: u64, addr: usize, fill: impl FnOnce(&Uffd) -> io::Result<Fill>) -> Result<Placement> {
        if self.is_failed() {
            return Err(Error::Os { errno: libc::ESHUTDOWN, what: "postcopy already failed" });
        }
        if !self.received.claim(page) {
            // Relaxed: a statistic.
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Placement::Duplicate);
        }
        match fill(&self.uffd).map_err(|e| Error::os(&e, "UFFDIO_COPY"))? {
            Fill::Installed => {}
            Fill::AlreadyMapped => {
                // Populated by someone else: no copy happened, so no wake
                // either; wake the waiters here.
                // Relaxed: a statistic.
                self.already_mapped.fetch_add(1, Ordering::Relaxed);
                self.uffd.wake(addr, self.page_size).map_err(|e| Error::os(&e, "UFFDIO_WAKE"))?;
            }
        }
        self.done_one(page);
        // Relaxed: a statistic.
        self.placed_n.fetch_add(1, Ordering::Relaxed);
        // L1 (Acquire): pairs with Q1 in `wait_requests`.
        let t = self.req_ns[page as usize].load(Ordering::Acquire);
        if t != 0 {
            let now = self.t0.elapsed().as_nanos() as u64 + 1;
            self.hist.record_us(now.saturating_sub(t) / 1000);
        }
        Ok(Placement::Placed)
    }

    /// Waits up to `timeout_ms` for faults and appends to `out` each page
    /// that needs requesting: one not yet received and not requested
    /// before. Returns how many were appended. The request time is taken
    /// here, so send the requests at once. At most [`FAULT_BATCH`](super::uffd::FAULT_BATCH) per call.
    /// One fault-service thread at a time (the userfaultfd is read by one
    /// reader).
    pub fn wait_requests(&self, timeout_ms: i32, out: &mut Vec<u64>) -> Result<usize> {
        if self.is_failed() {
            return Err(Error::Os { errno: libc::ESHUTDOWN, what: "postcopy already failed" });
        }
        let mut addrs = Vec::new();
        self.uffd.read_faults(timeout_ms, &mut addrs).map_err(|e| Error::os(&e, "reading userfaultfd"))?;
        let before = out.len();
        for a in addrs {
            let a = a as usize;
            if a < self.base || a >= self.base + self.len {
                continue;
            }
            let page = ((a - self.base) / self.page_size) as u64;
            // Relaxed: a statistic.
            self.faults.fetch_add(1, Ordering::Relaxed);
            if self.placed.test(page) {
                // The copy finished after this fault was queued; the copy's
                // wake may have missed a thread that had not slept yet.
                // Relaxed: a statistic.
                self.stale_wakes.fetch_add(1, Ordering::Relaxed);
                let start = self.base + page as usize * self.page_size;
                self.uffd.wake(start, self.page_size).map_err(|e| Error::os(&e, "UFFDIO_WAKE"))?;
                continue;
            }
            if self.received.test(page) {
                // A placer owns it and will wake everyone.
                continue;
            }
            if self.requested.claim(page) {
                let now = self.t0.elapsed().as_nanos() as u64 + 1;
                // Q1 (Release): see the module doc; pairs with L1 in `place`.
                self.req_ns[page as usize].store(now, Ordering::Release);
                // Relaxed: a statistic.
                self.requests.fetch_add(1, Ordering::Relaxed);
                out.push(page);
            }
        }
        Ok(out.len() - before)
    }

    /// Runs the fault service until every page is placed or the migration
    /// failed: each new request goes to `send` (the return path). A `send`
    /// error fails the migration ([`fail`](Self::fail)) and is returned.
    pub fn serve_faults(&self, send: &mut dyn FnMut(u64) -> io::Result<()>) -> Result<()> {
        let mut pages = Vec::new();
        while self.remaining() > 0 {
            pages.clear();
            // 10 ms: how late the loop notices completion or failure; a
            // fault wakes it at once.
            match self.wait_requests(10, &mut pages) {
                Ok(_) => {}
                Err(_) if self.is_failed() => return Ok(()),
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            }
            for &p in &pages {
                if let Err(e) = send(p) {
                    self.fail();
                    return Err(Error::os(&e, "sending a page request"));
                }
            }
        }
        Ok(())
    }

    /// Pages not yet placed (nor marked present). M1 (Acquire half): see the
    /// module doc.
    pub fn remaining(&self) -> u64 {
        self.missing.load(Ordering::Acquire)
    }

    /// Fails the migration and releases every thread waiting on the region.
    ///
    /// Postcopy cannot roll back: the source stopped its guest and part of
    /// the guest's memory never arrived, so no complete guest exists any
    /// more. Waiters are released by unregistering the region, after which
    /// the kernel serves their retried access as ordinary anonymous memory
    /// (a zero page): that memory is *not* guest memory, so the VMM must
    /// stop its vCPUs instead of running them on it. F1 (Release store of
    /// `failed`) happens before the unregister, whose wake-up happens before
    /// a released thread's next instruction; a guest thread that checks
    /// [`is_failed`](Self::is_failed) (F2) after each access therefore sees
    /// `true` for any access the release completed and stops without using
    /// it. (A KVM VMM sets `immediate_exit` and kicks its vCPUs first.)
    /// Idempotent; also called on a fault-service or placement error.
    pub fn fail(&self) {
        // F1 (Release): see above; pairs with F2 in `is_failed`.
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Best effort: an error means the region was never registered or is
        // already gone, and either way no thread waits on it.
        let _ = self.uffd.unregister(self.base, self.len);
    }

    /// Whether the migration failed. F2 (Acquire): pairs with F1 in `fail`.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether `page` is mapped (placed or present).
    pub fn is_placed(&self, page: u64) -> bool {
        page < self.pages() && self.placed.test(page)
    }

    /// Counters. Relaxed loads: statistics.
    pub fn counters(&self) -> DestCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DestCounters {
            faults: l(&self.faults),
            requests: l(&self.requests),
            placed: l(&self.placed_n),
            duplicates: l(&self.duplicates),
            already_mapped: l(&self.already_mapped),
            stale_wakes: l(&self.stale_wakes),
        }
    }

    /// Request-to-placement latency so far.
    pub fn latency(&self) -> LatencySummary {
        self.hist.summary()
    }
}
