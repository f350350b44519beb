//! A faithful replica of QEMU 7.2's legacy compression threads, for
//! benchmarks and `vmig-sim --compare` only (never part of libvmig.so).
//!
//! Replicated from QEMU 7.2 `migration/ram.c` (moved verbatim to
//! `migration/ram-compress.c` in 8.0):
//!
//! * `struct CompressParam` -> [`Param`]: `done`, `quit`, `trigger`, `result`,
//!   the page (`block`/`offset`), a `QemuMutex mutex` + `QemuCond cond` per
//!   thread, a per-thread output buffer (`param->file`) and `z_stream`.
//! * `comp_done_lock` + `comp_done_cond`: one global mutex and condvar. A
//!   thread publishes `done`/`result` under it and signals the migration
//!   thread.
//! * `do_data_compress()` -> [`do_data_compress`]: the thread loop. Holding
//!   `param->mutex`: if `trigger`, take the page, clear `trigger`, unlock,
//!   `do_compress_ram_page()` (zero check on the live page with
//!   `buffer_is_zero`, then `memcpy` to `originbuf`, then
//!   `qemu_put_compression_data` = `deflateReset` + `deflate(Z_FINISH)`),
//!   then lock `comp_done_lock`, `done = true`, `result`, signal
//!   `comp_done_cond`, unlock, relock `param->mutex`; else `qemu_cond_wait`.
//! * `compress_page_with_multi_thread()` -> [`LegacyComp::submit`]: lock
//!   `comp_done_lock`; scan the threads for one with `done`; lock its mutex,
//!   `done = false`, `send_queued_data()` (take its previous result),
//!   `compress_reset_result()`, `set_compress_params()` (`trigger = true`),
//!   signal its `cond`, unlock; if none is idle and `compress-wait-thread` is
//!   on, `qemu_cond_wait(&comp_done_cond, &comp_done_lock)` and rescan,
//!   otherwise return -1 (the caller sends the page uncompressed: Busy).
//! * `flush_compressed_data()` -> [`LegacyComp::flush`]: under
//!   `comp_done_lock` wait until every thread is `done`, then for each thread
//!   under its mutex `send_queued_data()` + `compress_reset_result()`.
//! * `compress_threads_save_cleanup()` -> `Drop`: per thread, set `quit`
//!   under its mutex, signal, join.
//!
//! QEMU "sends" a result by copying it into the migration stream; here it is
//! copied into a recycled result buffer queued for [`LegacyComp::poll`].
//! `wait_result` has no QEMU counterpart (QEMU only flushes); it waits on
//! `comp_done_cond` for one busy thread to finish, the same primitive.
//! The compressor is the same zlib-rs (with the same stored-block fallback)
//! as vmig's pool, so a comparison measures only the threading model.

// The loops index by thread number on purpose: they mirror QEMU's
// `for (idx = 0; idx < thread_count; idx++)` over `comp_param[idx]`.
#![allow(clippy::needless_range_loop)]

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};
use vmig::pool::CompStats;
use vmig::{Error, Result};

use crate::engine::{CompressEngine, CompressedPage};

/// QEMU's `enum CompressResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompressResult {
    None,
    ZeroPage,
    Compress,
}

/// The page handed to a thread (QEMU: `block` + `offset`).
#[derive(Clone, Copy)]
struct Request {
    page: *const u8,
    key: u64,
    opaque: usize,
}

// SAFETY: the page pointer is read by one thread at a time; the caller of
// `submit` keeps the page mapped until its result is returned.
unsafe impl Send for Request {}

/// Fields of `CompressParam` protected by `param->mutex`.
struct ParamState {
    quit: bool,
    trigger: bool,
    req: Option<Request>,
}

/// `param->file`: the thread's output and the request it belongs to.
struct Output {
    data: Vec<u8>,
    req: Option<Request>,
}

/// One thread's `CompressParam`.
struct Param {
    mutex: Mutex<ParamState>,
    cond: Condvar,
    /// As in QEMU, not under `param->mutex`: the thread writes it between
    /// taking a request and publishing `done = true` under `comp_done_lock`;
    /// the migration thread reads it only after seeing `done` under
    /// `comp_done_lock` and before the next `trigger`.
    file: std::cell::UnsafeCell<Output>,
}

// SAFETY: `file` is accessed by one side at a time, handed over by
// `comp_done_lock` (done = true) and `param->mutex` (trigger), see above.
unsafe impl Sync for Param {}

/// Fields protected by `comp_done_lock`: each thread's `done` and `result`.
struct DoneState {
    done: Vec<bool>,
    result: Vec<CompressResult>,
}

struct Shared {
    params: Vec<Param>,
    comp_done_lock: Mutex<DoneState>,
    comp_done_cond: Condvar,
    page_size: usize,
}

/// A result, shaped like `vmig::pool::CompResult`.
#[derive(Debug)]
pub struct LegacyResult {
    key: u64,
    opaque: usize,
    data: Vec<u8>,
    zero_page: bool,
    status: i32,
    worker: u32,
}

impl CompressedPage for LegacyResult {
    fn key(&self) -> u64 {
        self.key
    }
    fn opaque(&self) -> usize {
        self.opaque
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn is_zero_page(&self) -> bool {
        self.zero_page
    }
    /// 0, or `-EIO` when compression failed.
    fn status(&self) -> i32 {
        self.status
    }
}

impl LegacyResult {
    /// The thread that compressed it.
    pub fn worker(&self) -> u32 {
        self.worker
    }
}

/// The legacy pool: QEMU 7.2's compression threads.
pub struct LegacyComp {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    ready: VecDeque<LegacyResult>,
    spare: Vec<Vec<u8>>,
    /// Requests given to a thread whose result was not yet taken.
    pending: usize,
    /// `vmig::pool::CompStats`, so callers can print both the same way.
    /// `wakeups` counts `qemu_cond_signal(&param->cond)`: one per page.
    stats: CompStats,
}

impl std::fmt::Debug for LegacyComp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyComp")
            .field("threads", &self.threads.len())
            .field("page_size", &self.shared.page_size)
            .field("pending", &self.pending)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

/// `compressBound()`.
fn compress_bound(n: usize) -> usize {
    n + (n >> 12) + (n >> 14) + (n >> 25) + 13
}

/// `do_compress_ram_page()` + `qemu_compress_data()`.
fn do_compress_ram_page(
    z: &mut Compress,
    stored: &mut Compress,
    req: &Request,
    originbuf: &mut [u8],
    out: &mut Vec<u8>,
) -> CompressResult {
    // QEMU runs buffer_is_zero() on the live page, then copies it. The guest
    // may be writing that page, so a Rust reference to it would be a data
    // race: copy it with volatile loads first, then test the copy (one copy
    // more than QEMU pays for a zero page).
    // SAFETY: the caller of `submit` keeps `page_size` bytes readable.
    unsafe { vmig::guest_mem::copy_from_guest(req.page, originbuf) };
    out.clear();
    if originbuf.iter().all(|&b| b == 0) {
        return CompressResult::ZeroPage;
    }
    z.reset();
    if let Ok(Status::StreamEnd) = z.compress_vec(originbuf, out, FlushCompress::Finish) {
        return CompressResult::Compress;
    }
    // Same fallback as vmig's pool (zlib-rs level 1 may exceed compressBound).
    out.clear();
    stored.reset();
    match stored.compress_vec(originbuf, out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) => CompressResult::Compress,
        _ => CompressResult::None,
    }
}

/// `do_data_compress()`.
fn do_data_compress(shared: &Shared, idx: usize, level: u32) {
    let mut z = Compress::new(Compression::new(level), true);
    let mut stored = Compress::new(Compression::new(0), true);
    let mut originbuf = vec![0u8; shared.page_size];
    let param = &shared.params[idx];
    let mut st = param.mutex.lock().unwrap();
    while !st.quit {
        if st.trigger {
            let req = st.req.take().expect("trigger without a page");
            st.trigger = false;
            drop(st);

            // SAFETY: between `trigger` and `done = true` the file is ours.
            let file = unsafe { &mut *param.file.get() };
            let result = do_compress_ram_page(&mut z, &mut stored, &req, &mut originbuf, &mut file.data);
            file.req = Some(req);

            let mut done = shared.comp_done_lock.lock().unwrap();
            done.done[idx] = true;
            done.result[idx] = result;
            shared.comp_done_cond.notify_one();
            drop(done);

            st = param.mutex.lock().unwrap();
        } else {
            st = param.cond.wait(st).unwrap();
        }
    }
}

impl LegacyComp {
    /// `compress_threads_save_setup()`: threads named `legacy-comp/N`.
    pub fn new(threads: u32, level: i32, page_size: u32) -> std::io::Result<LegacyComp> {
        let n = threads as usize;
        let page_size = page_size as usize;
        let shared = Arc::new(Shared {
            params: (0..n)
                .map(|_| Param {
                    mutex: Mutex::new(ParamState { quit: false, trigger: false, req: None }),
                    cond: Condvar::new(),
                    file: std::cell::UnsafeCell::new(Output {
                        data: Vec::with_capacity(compress_bound(page_size)),
                        req: None,
                    }),
                })
                .collect(),
            // comp_param[i].done = true at setup.
            comp_done_lock: Mutex::new(DoneState { done: vec![true; n], result: vec![CompressResult::None; n] }),
            comp_done_cond: Condvar::new(),
            page_size,
        });
        let mut pool = LegacyComp {
            shared: shared.clone(),
            threads: Vec::new(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            pending: 0,
            stats: CompStats { pages_per_worker: vec![0; n], ..Default::default() },
        };
        for idx in 0..n {
            let s = shared.clone();
            let level = level as u32;
            pool.threads
                .push(std::thread::Builder::new().name(format!("legacy-comp/{idx}")).spawn(move || do_data_compress(&s, idx, level))?);
        }
        Ok(pool)
    }

    /// `send_queued_data()` + `compress_reset_result()` for thread `idx`.
    /// Called with `param->mutex` held after `done[idx]` was seen true under
    /// `comp_done_lock`, as in QEMU.
    fn send_queued_data(&mut self, idx: usize, _st: &mut ParamState, result: CompressResult) {
        // SAFETY: done[idx] was true and no trigger is pending: the thread
        // does not touch its file until we trigger it again.
        let file = unsafe { &mut *self.shared.params[idx].file.get() };
        let Some(req) = file.req.take() else { return };
        self.pending -= 1;
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        let (zero_page, status) = match result {
            CompressResult::ZeroPage => (true, 0),
            CompressResult::Compress => {
                data.extend_from_slice(&file.data);
                (false, 0)
            }
            CompressResult::None => (false, -5),
        };
        let s = &mut self.stats;
        s.pages_per_worker[idx] += 1;
        match result {
            CompressResult::ZeroPage => s.zero_pages += 1,
            CompressResult::Compress => {
                s.pages += 1;
                s.bytes_in += self.shared.page_size as u64;
                s.bytes_out += data.len() as u64;
            }
            CompressResult::None => s.failed += 1,
        }
        self.ready.push_back(LegacyResult {
            key: req.key,
            opaque: req.opaque,
            data,
            zero_page,
            status,
            worker: idx as u32,
        });
    }

    /// Number of compression threads.
    pub fn threads(&self) -> u32 {
        self.threads.len() as u32
    }
}

/// The QEMU 7.2 functions behind each step of the engine's shape.
impl CompressEngine for LegacyComp {
    type Page = LegacyResult;

    /// `compress_page_with_multi_thread()`. `Err(Error::Busy)` when no
    /// thread is idle and `wait` is false (QEMU returns -1 and sends the page
    /// uncompressed).
    ///
    /// # Safety
    /// `page` is readable for `page_size` bytes until its result is returned.
    unsafe fn submit(&mut self, page: *const u8, key: u64, opaque: usize, wait: bool) -> Result<()> {
        if page.is_null() {
            return Err(Error::InvalidArgument("page is NULL"));
        }
        let shared = self.shared.clone();
        let mut done = shared.comp_done_lock.lock().unwrap();
        loop {
            for idx in 0..shared.params.len() {
                if done.done[idx] {
                    let param = &shared.params[idx];
                    let mut st = param.mutex.lock().unwrap();
                    done.done[idx] = false;
                    let result = done.result[idx];
                    self.send_queued_data(idx, &mut st, result);
                    done.result[idx] = CompressResult::None;
                    // set_compress_params()
                    st.req = Some(Request { page, key, opaque });
                    st.trigger = true;
                    self.pending += 1;
                    self.stats.wakeups += 1;
                    param.cond.notify_one();
                    return Ok(());
                }
            }
            if !wait {
                self.stats.busy += 1;
                return Err(Error::Busy);
            }
            done = shared.comp_done_cond.wait(done).unwrap();
        }
    }

    /// Takes a result already sent by `submit`/`flush`.
    fn poll(&mut self) -> Option<LegacyResult> {
        self.ready.pop_front()
    }

    /// Takes a result, waiting on `comp_done_cond` for a busy thread to
    /// finish when none is queued; `None` when nothing is in flight.
    fn wait_result(&mut self) -> Option<LegacyResult> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        if self.pending == 0 {
            return None;
        }
        let shared = self.shared.clone();
        let mut done = shared.comp_done_lock.lock().unwrap();
        loop {
            for idx in 0..shared.params.len() {
                if done.done[idx] {
                    let mut st = shared.params[idx].mutex.lock().unwrap();
                    // SAFETY: done[idx] is true: the thread is idle.
                    if unsafe { (*shared.params[idx].file.get()).req.is_some() } {
                        let result = done.result[idx];
                        self.send_queued_data(idx, &mut st, result);
                        done.result[idx] = CompressResult::None;
                        drop(st);
                        return self.ready.pop_front();
                    }
                }
            }
            done = shared.comp_done_cond.wait(done).unwrap();
        }
    }

    /// Returns a result's buffer for reuse.
    fn release(&mut self, r: LegacyResult) {
        self.spare.push(r.data);
    }

    /// `flush_compressed_data()`.
    fn flush(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let mut done = shared.comp_done_lock.lock().unwrap();
        for idx in 0..shared.params.len() {
            while !done.done[idx] {
                done = shared.comp_done_cond.wait(done).unwrap();
            }
        }
        let results = done.result.clone();
        drop(done);
        for idx in 0..shared.params.len() {
            let mut st = shared.params[idx].mutex.lock().unwrap();
            if !st.quit {
                self.send_queued_data(idx, &mut st, results[idx]);
            }
        }
        let mut done = shared.comp_done_lock.lock().unwrap();
        done.result.iter_mut().for_each(|r| *r = CompressResult::None);
        Ok(())
    }

    /// The counters so far, in vmig's shape.
    fn stats(&self) -> CompStats {
        self.stats.clone()
    }

    /// QEMU 7.2's threads take whichever page comes next: two copies of one
    /// page may finish out of order (hence `flush_compressed_data` at the
    /// end of each round in `find_dirty_block`).
    fn ordered_per_key(&self) -> bool {
        false
    }
}

impl Drop for LegacyComp {
    /// `compress_threads_save_cleanup()`.
    fn drop(&mut self) {
        for p in &self.shared.params {
            let mut st = p.mutex.lock().unwrap();
            st.quit = true;
            p.cond.notify_one();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
