//! The source's migration thread: QEMU's precopy loop (`migration_thread`,
//! `migration_iteration_run`, `ram_save_iterate`, `migration_bitmap_sync`,
//! `migration_trigger_throttle`, `migration_completion`) over a simulated
//! guest.
//!
//! * Setup: start dirty logging and mark every page dirty.
//! * `--dirty-tracking ring` (`ring_tracking`): no bitmap; pages come from
//!   `vmig::dirty`'s scheduler (the first pass, then the pages the reaper
//!   marked), and an iteration ends when as many pages went out as were
//!   pending at the last sync.
//! * Iterate: send dirty pages in address order. Every `BUFFER_DELAY`
//!   (100 ms) the bandwidth of the last window gives the threshold
//!   `bandwidth x downtime-limit`. When the pages still to send drop below
//!   it, sync the dirty log; if they are still below, complete.
//! * Each page goes to the compressor (the workers find zero pages); if every
//!   worker is busy and compress-wait-thread is off, it is sent raw (after a
//!   zero check) unless an older copy of it is still being compressed, which
//!   would overtake it on the wire.
//! * Auto-converge: at a sync at least one second after the previous
//!   accounted one, if the guest dirtied more than 50% of the bytes sent in
//!   the period for the second time, raise the throttle (initial, then
//!   +increment, up to max).
//! * Completion: stop the vCPUs (downtime starts), final sync, send the
//!   rest, drain the compressor, end the stream and wait until the
//!   destination has applied every page (downtime ends).

use std::io;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bitmap::PageBitmap;
use crate::config::{SimConfig, PAGE_SIZE};
use crate::converge::Trigger;
use crate::dest::DestDone;
use crate::engines::{CompOut, Compressor, SubmitError};
use crate::running::RunningGuest;
use crate::link::{Link, WINDOW};
use crate::memory::GuestRam;
use crate::wire;

/// A snapshot for the progress display.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// Seconds since the migration started.
    pub elapsed_s: f64,
    /// "setup", "active", "device" (stop-and-copy) or "completed".
    pub phase: &'static str,
    /// Bytes of dirty pages still to send.
    pub remaining: u64,
    /// Bytes put on the wire so far.
    pub transferred: u64,
    /// Dirty-log syncs so far.
    pub dirty_sync_count: u64,
    /// Current throttle percentage.
    pub throttle_pct: u32,
    /// Link use over the last window, Mbit/s.
    pub mbps: f64,
}

/// How the migration ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Switched over; the destination has every page.
    Completed,
    /// Did not converge within --max-time; the guest keeps running on the
    /// source (QEMU: migrate_cancel).
    Cancelled,
    /// An error ended it.
    Failed(String),
}

/// What the migration thread measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceStats {
    /// Setup time.
    pub setup_ms: f64,
    /// Time from start to the end of the migration.
    pub total_ms: f64,
    /// Time the guest was stopped.
    pub downtime_ms: f64,
    /// The last computed expected downtime (remaining / bandwidth).
    pub expected_downtime_ms: f64,
    /// Bytes put on the wire.
    pub transferred: u64,
    /// Bytes of dirty pages left when the run ended.
    pub remaining: u64,
    /// Zero-page records (QEMU "duplicate").
    pub zero_pages: u64,
    /// Raw-page records (QEMU "normal").
    pub normal_pages: u64,
    /// Compressed-page records.
    pub compressed_pages: u64,
    /// Raw pages sent because every compression thread was busy.
    pub busy_raw_pages: u64,
    /// Bytes of compressed payload.
    pub compressed_bytes: u64,
    /// Dirty-log syncs (QEMU "dirty sync count").
    pub dirty_sync_count: u64,
    /// Rounds completed over the bitmap.
    pub rounds: u64,
    /// Highest throttle percentage set.
    pub throttle_max_pct: u32,
    /// Pages dirtied per second in the last accounted period.
    pub dirty_pages_rate: u64,
    /// Time the migration thread slept on the rate limit.
    pub rate_limited_ms: f64,
    /// Downtime breakdown: stopping the vCPUs and the reaper.
    pub downtime_stop_ms: f64,
    /// Downtime breakdown: final sync and sending the rest (with the
    /// compressor drained).
    pub downtime_send_ms: f64,
    /// Downtime breakdown: waiting for the destination to apply the rest.
    pub downtime_dest_ms: f64,
    /// Pages sent while the guest was stopped.
    pub downtime_pages: u64,
    /// Time the migration thread spent finding dirty pages: syncing and
    /// walking the bitmap (bitmap mode), or reaping on a sync and taking
    /// pages from the scheduler (ring mode).
    pub find_dirty_ms: f64,
    /// Of `find_dirty_ms`, the part spent until the first pass over RAM
    /// was done (bitmap: the first round; ring: the background cursor).
    pub find_dirty_first_pass_ms: f64,
    /// Dirty-log syncs done when the first pass ended.
    pub first_pass_syncs: u64,
    /// Time finding dirty pages in each iteration (from one sync to the
    /// next; the last entry ends with the final sync in downtime).
    pub find_dirty_per_iteration_ms: Vec<f64>,
    /// Ring mode: the scheduler's counters.
    pub dirty_scheduler: Option<crate::ring_tracking::SchedulerSummary>,
    /// What the destination reported at the end (the migration thread
    /// receives it to end the downtime).
    #[serde(skip)]
    pub dest: Option<crate::dest::DestStats>,
}

/// Emits records; kept apart from the compressor so its callbacks can borrow
/// this mutably.
struct Emitter<'a> {
    ram: &'a GuestRam,
    link: Link,
    /// Copies of each page queued for compression and not yet sent (a page
    /// can be queued again before its older copy's result is collected).
    inflight: Vec<u16>,
    stats: SourceStats,
    fault_page: Option<u64>,
    page_buf: Box<[u8; PAGE_SIZE]>,
    err: Option<io::Error>,
}

impl Emitter<'_> {
    fn record(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let buf = self.link.buf();
        let before = buf.len();
        f(buf);
        let n = buf.len() - before;
        if let Err(e) = self.link.commit(n) {
            self.err.get_or_insert(e);
        }
    }

    fn faulty(&self, page: u64) -> bool {
        self.fault_page == Some(page)
    }

    /// A compression result for `page`.
    fn result(&mut self, page: u64, out: CompOut<'_>) {
        let n = &mut self.inflight[page as usize];
        *n = n.saturating_sub(1);
        match out {
            CompOut::Zero => self.zero(page),
            CompOut::Data(z) => {
                let corrupt = self.faulty(page);
                self.record(|b| {
                    wire::put_compressed(b, page, z);
                    if corrupt {
                        // Flip a bit of the zlib stream's Adler-32 trailer.
                        *b.last_mut().expect("non-empty record") ^= 1;
                    }
                });
                self.stats.compressed_pages += 1;
                self.stats.compressed_bytes += z.len() as u64;
            }
            CompOut::Failed(_) => self.raw(page),
        }
    }

    fn zero(&mut self, page: u64) {
        let fill = if self.faulty(page) { 0xff } else { 0 };
        self.record(|b| wire::put_zero(b, page, fill));
        self.stats.zero_pages += 1;
    }

    /// Sends `page` without compression: a zero record or the raw page.
    fn raw(&mut self, page: u64) {
        let mut buf = std::mem::replace(&mut self.page_buf, Box::new([0; PAGE_SIZE]));
        self.ram.read_page(page, &mut buf);
        if crate::memory::is_zero(&buf[..]) {
            self.zero(page);
        } else {
            if self.faulty(page) {
                buf[0] ^= 0x5a;
            }
            self.record(|b| wire::put_page(b, page, &buf[..]));
            self.stats.normal_pages += 1;
        }
        self.page_buf = buf;
    }

    fn check(&mut self) -> io::Result<()> {
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The migration thread's state.
pub struct Source<'a> {
    cfg: &'a SimConfig,
    ram: &'a GuestRam,
    comp: Option<Box<dyn Compressor + 'a>>,
    em: Emitter<'a>,
    bmap: PageBitmap,
    /// Ring mode (`--dirty-tracking ring`): the scheduler's taking half;
    /// `bmap` is then unused.
    taker: Option<vmig::dirty::DirtyTaker>,
    /// Ring mode: new marks at the previous sync, for the throttle trigger.
    marks_seen: u64,
    /// Ring mode: pages handed out at which the current iteration ends.
    iteration_end: u64,
    find_dirty: Duration,
    /// `find_dirty` when the first pass ended.
    first_pass_find: Option<Duration>,
    /// `find_dirty` at the previous sync.
    find_at_sync: Duration,
    cursor: u64,
    threshold: u64,
    trigger: Trigger,
}

impl<'a> Source<'a> {
    /// A migration of `ram` over `link`.
    pub fn new(cfg: &'a SimConfig, ram: &'a GuestRam, comp: Option<Box<dyn Compressor + 'a>>, link: Link) -> Self {
        let pages = ram.pages();
        Source {
            cfg,
            ram,
            comp,
            em: Emitter {
                ram,
                link,
                inflight: vec![0; pages as usize],
                stats: SourceStats::default(),
                fault_page: cfg.fault_corrupt_page,
                page_buf: Box::new([0; PAGE_SIZE]),
                err: None,
            },
            bmap: PageBitmap::new(if cfg.dirty_tracking == crate::config::DirtyTracking::Ring { 0 } else { pages }),
            taker: None,
            marks_seen: 0,
            iteration_end: 0,
            find_dirty: Duration::ZERO,
            first_pass_find: None,
            find_at_sync: Duration::ZERO,
            cursor: 0,
            threshold: 0,
            trigger: Trigger::new(cfg.throttle_initial, cfg.throttle_increment, cfg.throttle_max, Instant::now()),
        }
    }

    /// Ring mode: take pages from `taker` instead of a bitmap.
    pub fn with_scheduler(mut self, taker: Option<vmig::dirty::DirtyTaker>) -> Self {
        // The first iteration is the pages pending at start: all of RAM.
        self.iteration_end = taker.as_ref().map_or(0, |t| t.pending());
        self.taker = taker;
        self
    }

    /// Ring mode: whether the pages pending at the last sync have gone out
    /// (the ring mode's end of an iteration, where the bitmap design's
    /// round ends; the auto-converge trigger runs on syncs).
    fn ring_iteration_done(&self) -> bool {
        self.taker.as_ref().is_some_and(|t| t.stats().handed_out >= self.iteration_end)
    }

    /// Pages still to send.
    fn pending_pages(&self) -> u64 {
        match &self.taker {
            Some(t) => t.pending(),
            None => self.bmap.count(),
        }
    }

    /// Runs the migration to its end. `done` reports the destination's
    /// completion; `progress` is called about every 100 ms.
    pub fn run(
        mut self,
        guest: &mut dyn RunningGuest,
        done: &Receiver<DestDone>,
        progress: &mut dyn FnMut(&Progress),
    ) -> (Status, SourceStats, Option<crate::engines::CompStats>) {
        let t0 = Instant::now();
        let status = match self.migrate(t0, guest, done, progress) {
            Ok(s) => s,
            // A destination that failed closes the connection, so the
            // source sees a broken pipe: report the destination's reason.
            Err(e) => match done.recv_timeout(Duration::from_secs(2)) {
                Ok(Err(d)) => Status::Failed(format!("destination: {d}")),
                _ => Status::Failed(e.to_string()),
            },
        };
        let pending = self.pending_pages();
        let mut st = self.em.stats;
        st.total_ms = ms(t0.elapsed());
        st.transferred = self.em.link.transferred;
        st.remaining = pending * PAGE_SIZE as u64;
        st.find_dirty_ms = ms(self.find_dirty);
        st.find_dirty_first_pass_ms = ms(self.first_pass_find.unwrap_or(self.find_dirty));
        st.dirty_scheduler = self
            .taker
            .as_ref()
            .map(|t| crate::ring_tracking::SchedulerSummary::new(self.cfg.dirty_queue_capacity(), &t.stats()));
        st.rate_limited_ms = ms(self.em.link.throttled);
        let comp = self.comp.as_ref().map(|c| c.stats());
        (status, st, comp)
    }

    fn migrate(
        &mut self,
        t0: Instant,
        guest: &mut dyn RunningGuest,
        done: &Receiver<DestDone>,
        progress: &mut dyn FnMut(&Progress),
    ) -> io::Result<Status> {
        // Setup (QEMU ram_save_setup): dirty logging on, everything dirty.
        guest.start_logging().map_err(io::Error::other)?;
        if self.taker.is_none() {
            // Ring mode: the scheduler starts with every page pending.
            self.bmap.set_all();
        }
        self.em.record(|b| wire::put_header(b, self.ram.pages()));
        self.em.link.flush()?;
        self.em.stats.setup_ms = ms(t0.elapsed());
        self.trigger =
            Trigger::new(self.cfg.throttle_initial, self.cfg.throttle_increment, self.cfg.throttle_max, Instant::now());
        let max_time = Duration::from_secs_f64(self.cfg.max_time_s);
        let mut window_start = Instant::now();
        let mut window_bytes = self.em.link.transferred;
        let mut mbps = 0.0;
        loop {
            let now = Instant::now();
            let elapsed = now - window_start;
            if elapsed >= WINDOW {
                // QEMU migration_update_counters.
                let sent = self.em.link.transferred - window_bytes;
                let bw_per_ms = sent as f64 / ms(elapsed);
                self.threshold = (bw_per_ms * self.cfg.downtime_ms as f64) as u64;
                mbps = sent as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
                let remaining = self.pending_pages() * PAGE_SIZE as u64;
                self.em.stats.expected_downtime_ms = if bw_per_ms > 0.0 { remaining as f64 / bw_per_ms } else { 0.0 };
                window_start = now;
                window_bytes = self.em.link.transferred;
                progress(&self.progress(t0, "active", guest.throttle().get(), mbps));
                if now - t0 >= max_time {
                    guest.throttle().set(0);
                    return Ok(Status::Cancelled);
                }
            }
            // QEMU ram_save_pending: sync when below the threshold. Ring
            // mode has no rounds that empty a bitmap: an iteration ends when
            // as many pages went out as were pending at the last sync.
            let mut pending = self.pending_pages() * PAGE_SIZE as u64;
            if pending < self.threshold || pending == 0 || self.ring_iteration_done() {
                self.sync(guest, true)?;
                pending = self.pending_pages() * PAGE_SIZE as u64;
            }
            if pending > 0 && pending >= self.threshold {
                self.send_for(window_start + WINDOW)?;
                continue;
            }
            break;
        }
        // Completion (QEMU migration_completion).
        let down = Instant::now();
        progress(&self.progress(t0, "device", guest.throttle().get(), mbps));
        guest.stop();
        guest.throttle().set(0);
        let stopped = Instant::now();
        self.sync(guest, false)?;
        self.em.stats.downtime_pages = self.pending_pages();
        self.cursor = 0;
        let t = Instant::now();
        let mut rest = Vec::with_capacity(self.pending_pages() as usize);
        // Every marker has stopped (vCPUs and reaper joined): the scheduler
        // is exact now and `next` runs until it is empty.
        while let Some(p) = self.take_one() {
            rest.push(p);
        }
        self.find_dirty += t.elapsed();
        for p in rest {
            self.send_page(p)?;
        }
        self.drain()?;
        // The vCPU state travels after the last page (QEMU: the device
        // sections after RAM's last iteration).
        let dev = guest.device_state().map_err(io::Error::other)?;
        if !dev.is_empty() {
            self.em.record(|b| wire::put_device(b, &dev));
        }
        self.em.record(wire::put_eos);
        self.em.record(wire::put_end);
        self.em.check()?;
        self.em.link.flush()?;
        let sent = Instant::now();
        let dest = done.recv().map_err(|_| io::Error::other("destination thread died"))?;
        match dest {
            Ok(d) => self.em.stats.dest = Some(d),
            Err(e) => return Err(io::Error::other(format!("destination: {e}"))),
        }
        let end = Instant::now();
        self.em.stats.downtime_ms = ms(end - down);
        self.em.stats.downtime_stop_ms = ms(stopped - down);
        self.em.stats.downtime_send_ms = ms(sent - stopped);
        self.em.stats.downtime_dest_ms = ms(end - sent);
        progress(&self.progress(t0, "completed", 0, mbps));
        Ok(Status::Completed)
    }

    fn progress(&self, t0: Instant, phase: &'static str, throttle_pct: u32, mbps: f64) -> Progress {
        Progress {
            elapsed_s: t0.elapsed().as_secs_f64(),
            phase,
            remaining: self.pending_pages() * PAGE_SIZE as u64,
            transferred: self.em.link.transferred,
            dirty_sync_count: self.em.stats.dirty_sync_count,
            throttle_pct,
            mbps,
        }
    }

    /// QEMU migration_bitmap_sync, with migration_trigger_throttle.
    /// `during_precopy` false: the final sync with the vCPUs stopped. QEMU
    /// runs the trigger there too, but a raise can no longer matter; skipping
    /// it keeps "throttle reached" the throttle the guest actually ran under.
    fn sync(&mut self, guest: &mut dyn RunningGuest, during_precopy: bool) -> io::Result<()> {
        let t = Instant::now();
        let new = match &self.taker {
            None => guest.sync_into(&mut self.bmap).map_err(io::Error::other)?,
            Some(taker) => {
                // Ring mode: reap, so the scheduler holds every harvested
                // page (QEMU's ram_state_pending_exact syncs too); pages
                // newly queued since the last sync are the trigger's input.
                guest.reap().map_err(io::Error::other)?;
                let s = taker.stats();
                self.iteration_end = s.handed_out + taker.pending();
                let queued = s.marks - s.duplicates;
                std::mem::replace(&mut self.marks_seen, queued).abs_diff(queued)
            }
        };
        self.find_dirty += t.elapsed();
        // The iteration ends with this sync.
        let it = self.find_dirty - self.find_at_sync;
        self.em.stats.find_dirty_per_iteration_ms.push(ms(it));
        self.find_at_sync = self.find_dirty;
        self.em.stats.dirty_sync_count += 1;
        if !during_precopy {
            return Ok(());
        }
        let t = guest.throttle();
        let raise = self.trigger.on_sync(Instant::now(), new, PAGE_SIZE as u64, self.em.link.transferred, t.get());
        self.em.stats.dirty_pages_rate = self.trigger.dirty_pages_rate;
        if let Some(pct) = raise.filter(|_| self.cfg.auto_converge) {
            t.set(pct);
            self.em.stats.throttle_max_pct = self.em.stats.throttle_max_pct.max(pct);
        }
        Ok(())
    }

    /// Takes the next page to send: the next set bit from the cursor
    /// (bitmap mode), or the scheduler's next page (ring mode).
    fn take_one(&mut self) -> Option<u64> {
        if let Some(t) = self.taker.as_mut() {
            return t.next();
        }
        let p = self.bmap.take_next(self.cursor)?;
        self.cursor = p + 1;
        Some(p)
    }

    /// Sends dirty pages until `until`, or until what is left drops below
    /// the threshold. Pages are found FIND_BATCH at a time, so that timing
    /// the finding costs two clock reads per batch, not per page.
    fn send_for(&mut self, until: Instant) -> io::Result<()> {
        const FIND_BATCH: usize = 64;
        let mut batch = [0u64; FIND_BATCH];
        loop {
            let t = Instant::now();
            let mut n = 0;
            while n < FIND_BATCH {
                match self.take_one() {
                    Some(p) => {
                        batch[n] = p;
                        n += 1;
                    }
                    None => break,
                }
            }
            self.find_dirty += t.elapsed();
            if self.first_pass_find.is_none() {
                let done = match &self.taker {
                    Some(t) => t.stats().background_remaining == 0,
                    None => n < FIND_BATCH,
                };
                if done {
                    self.first_pass_find = Some(self.find_dirty);
                    self.em.stats.first_pass_syncs = self.em.stats.dirty_sync_count;
                }
            }
            for &p in &batch[..n] {
                self.send_page(p)?;
            }
            if n < FIND_BATCH {
                if self.taker.is_some() {
                    // Ring mode: nothing ready now; the caller decides
                    // (sync, switch over, or come back).
                    return self.em.check();
                }
                // End of a round over the bitmap.
                if self.comp.as_ref().is_some_and(|c| c.needs_round_flush()) {
                    self.drain()?;
                }
                self.em.record(wire::put_eos);
                self.em.stats.rounds += 1;
                self.cursor = 0;
                if self.bmap.count() == 0 {
                    return self.em.check();
                }
            }
            self.em.check()?;
            if Instant::now() >= until
                || self.pending_pages() * (PAGE_SIZE as u64) < self.threshold
                || self.ring_iteration_done()
            {
                return Ok(());
            }
        }
    }

    fn send_page(&mut self, page: u64) -> io::Result<()> {
        let Some(comp) = self.comp.as_mut() else {
            self.em.raw(page);
            return Ok(());
        };
        let em = &mut self.em;
        while comp.poll(&mut |k, out| em.result(k, out)) {}
        let ptr = self.ram.page_ptr(page) as *const u8;
        // SAFETY: guest RAM outlives the compressor (both borrowed for this
        // Source's lifetime), so the page stays mapped until its result is
        // returned. The same holds for the submit in the loop below.
        match unsafe { comp.submit(page, ptr, self.cfg.compress_wait) } {
            Ok(()) => {
                em.inflight[page as usize] += 1;
                return Ok(());
            }
            Err(SubmitError::Busy) => {}
            // A real error fails the migration with its message.
            Err(SubmitError::Failed(msg)) => return Err(io::Error::other(msg)),
        }
        if !self.cfg.compress_wait && em.inflight[page as usize] == 0 {
            // QEMU compress-wait-thread=off: send it uncompressed.
            em.stats.busy_raw_pages += 1;
            em.raw(page);
            return Ok(());
        }
        // Waiting, or an older copy is still being compressed (a raw copy
        // now could reach the destination before it): collect results until
        // the pool takes the page. The pool also refuses, even with `wait`,
        // while its result queue is full: only collecting frees it.
        loop {
            let got = comp.wait_result(&mut |k, out| em.result(k, out));
            // SAFETY: as above.
            match unsafe { comp.submit(page, ptr, true) } {
                Ok(()) => {
                    em.inflight[page as usize] += 1;
                    return Ok(());
                }
                Err(SubmitError::Busy) => {}
                Err(SubmitError::Failed(msg)) => return Err(io::Error::other(msg)),
            }
            if !got {
                // Nothing in flight and still refused: cannot happen with
                // a working pool; send the page raw rather than spin.
                em.stats.busy_raw_pages += 1;
                em.raw(page);
                return Ok(());
            }
        }
    }

    /// Sends every result still in flight.
    fn drain(&mut self) -> io::Result<()> {
        if let Some(comp) = self.comp.as_mut() {
            let em = &mut self.em;
            while comp.wait_result(&mut |k, out| em.result(k, out)) {}
        }
        self.em.check()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
