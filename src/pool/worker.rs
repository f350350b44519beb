//! The engine shared by the compression and decompression pools: N worker
//! threads, one SPSC submission ring each, one MPSC done ring.
//!
//! ```text
//!                 round robin (same key -> same worker)
//!  submitter ──► [ring 0] ──► worker 0 ──┐
//!            ──► [ring 1] ──► worker 1 ──┼──► [done ring, MPSC] ──► submitter
//!            ──► [ring N] ──► worker N ──┘
//! ```
//!
//! This is the model of the 2018 RFC "migration: improve multithreads for
//! compression and decompression" (shared/seeds), on the vmig ring, plus:
//! a worker sleeps only when its ring is empty and is woken only if asleep
//! ([`super::wake`]); the submitter sleeps only when nothing is ready and,
//! waiting for space, is woken only when a ring is down to half; a key
//! still in flight is routed to the worker holding it, so results for one key
//! come back in submission order (each worker is FIFO, and the done ring is
//! FIFO per producer); a waiting submission keeps every worker within two
//! rings of the least-fed one.
//!
//! **Single-thread rule**: an `Engine` is driven by one thread at a time
//! (`&mut self`): the submitting thread also collects. Only that thread
//! touches the route table, the free list and the statistics, so none of
//! them needs a lock or an atomic.
//!
//! No lock on the hot path: a submission is one SPSC enqueue plus one fence
//! and load (`wake_if_sleeping`); a completion is one MPSC enqueue plus one
//! fence and load; a collection is one dequeue.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::handoff::{self, Waiter};
use super::job::{RouteTable, Slot};
use super::tsan::Tsan;
use super::wake::{spin_for, Spin, WakeFlag};
use crate::error::{Error, Result};
use crate::ring::{self, Consumer, MpProducer, Producer};
use crate::sync::{AtomicBool, Ordering};

/// What a worker does with one job.
pub(crate) trait Work: Send + 'static {
    /// The per-page payload.
    type Job: Send + 'static;
    /// Processes one job in place.
    fn run(&mut self, job: &mut Self::Job);
    /// Marks a job failed after `run` panicked (status `-EIO`).
    fn fail(job: &mut Self::Job);
}

type SlotBox<J> = Box<Slot<J>>;

/// State shared by the submitter and every worker.
struct Shared {
    /// The submitter's flag and why it sleeps (`wait_one`, `flush`:
    /// for a result; `submit(wait)`: for ring space).
    waiter: Waiter,
    /// Set once by `Drop`; workers exit when they see it.
    shutdown: AtomicBool,
}

struct WorkerHandle<J: Send + 'static> {
    tx: Producer<SlotBox<J>>,
    wake: Arc<WakeFlag>,
    thread: Option<JoinHandle<()>>,
}

/// Counters kept by the submitting thread (plain integers: single-thread rule).
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineCounters {
    /// Submissions refused with `Busy`.
    pub busy: u64,
    /// Workers woken from sleep by a submission.
    pub wakeups: u64,
    /// Results collected per worker.
    pub per_worker: Vec<u64>,
}

pub(crate) struct Engine<J: Send + 'static> {
    workers: Vec<WorkerHandle<J>>,
    done: Consumer<SlotBox<J>>,
    shared: Arc<Shared>,
    routes: RouteTable,
    /// Results already taken off the done ring by `flush`, oldest first.
    ready: VecDeque<SlotBox<J>>,
    /// Round-robin cursor: the worker tried first by the next submission.
    next: usize,
    /// Submitted and not yet collected (queued, running, done or `ready`).
    in_flight: usize,
    /// Cap on `in_flight`: the done ring's capacity, so a worker never finds
    /// the done ring full.
    max_in_flight: usize,
    pub counters: EngineCounters,
    tsan: Tsan,
    /// How waits spin before they sleep (`wake::Spin::for_pool`).
    spin: Spin,
    /// Pages queued on each worker so far.
    submitted: Vec<u64>,
    /// How far (in pages) a waiting submission lets one worker run ahead of
    /// the least-fed one: two rings' worth (why, measured: docs/pool.md,
    /// "Balance"). A non-waiting submission is never refused for balance.
    max_skew: u64,
}

impl<J: Send + 'static> Engine<J> {
    /// Starts `threads` workers named `{name}/{index}`, each with a ring of
    /// `depth` slots and its own `Work` from `make_work(index)`; every wait
    /// spins up to `spin_ns` (the `spin_ns` option) before it sleeps. On any
    /// failure the workers already started are stopped and joined.
    pub fn new<W: Work<Job = J>>(
        threads: u32,
        depth: u32,
        spin_ns: u32,
        name: &str,
        mut make_work: impl FnMut(u32) -> Result<W>,
    ) -> Result<Self> {
        // Room for every queued slot plus one running per worker, doubled so
        // a caller that collects in batches is not refused early.
        let max = (threads as usize * (depth as usize + 1) * 2).next_power_of_two();
        let cap = u32::try_from(max).map_err(|_| Error::InvalidArgument("pool too large"))?;
        let (done_tx, done) = ring::mpsc::<SlotBox<J>>(cap)?;
        let mut ready = VecDeque::new();
        ready.try_reserve(max).map_err(|_| Error::OutOfMemory)?;
        let mut engine = Engine {
            workers: Vec::with_capacity(threads as usize),
            done,
            shared: Arc::new(Shared { waiter: Waiter::default(), shutdown: AtomicBool::new(false) }),
            routes: RouteTable::with_capacity(max)?,
            ready,
            next: 0,
            in_flight: 0,
            max_in_flight: max,
            counters: EngineCounters { per_worker: vec![0; threads as usize], ..Default::default() },
            tsan: Tsan::detect(),
            spin: Spin::for_pool(threads, spin_ns),
            submitted: vec![0; threads as usize],
            max_skew: 2 * u64::from(depth),
        };
        for index in 0..threads {
            let work = make_work(index)?;
            let (tx, rx) = ring::spsc::<SlotBox<J>>(depth)?;
            let wake = Arc::new(WakeFlag::new());
            let ctx = WorkerCtx {
                rx,
                done: done_tx.clone(),
                wake: wake.clone(),
                shared: engine.shared.clone(),
                tsan: engine.tsan,
                spin: engine.spin,
                low_water: depth / 2,
            };
            let thread = std::thread::Builder::new()
                .name(format!("{name}/{index}"))
                .spawn(move || worker_main(work, ctx))
                .map_err(|_| Error::ThreadSpawn)?;
            engine.workers.push(WorkerHandle { tx, wake, thread: Some(thread) });
        }
        Ok(engine)
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Queues `slot`. The slot's `key` picks the worker: the one still
    /// holding that key, otherwise the next in round-robin order with room.
    ///
    /// `Err((Busy, slot))` when the chosen worker(s) are full and `wait` is
    /// false, or when `max_in_flight` results await collection (whatever
    /// `wait` says: only the caller can collect them).
    pub fn submit(&mut self, mut slot: SlotBox<J>, wait: bool) -> std::result::Result<(), (Error, SlotBox<J>)> {
        if self.in_flight >= self.max_in_flight {
            self.counters.busy += 1;
            return Err((Error::Busy, slot));
        }
        let pinned = self.routes.worker_of(slot.key);
        loop {
            // A waiting, unpinned submission may not feed a worker that is
            // `max_skew` pages ahead of the least-fed one (see `max_skew`).
            let limit = match (wait, pinned) {
                (true, None) => self.submitted.iter().min().copied().unwrap_or(0) + self.max_skew,
                _ => u64::MAX,
            };
            match self.try_enqueue(slot, pinned, limit) {
                Ok(w) => {
                    self.queued(w);
                    return Ok(());
                }
                Err(s) => slot = s,
            }
            if !wait {
                self.counters.busy += 1;
                return Err((Error::Busy, slot));
            }
            // Every candidate ring is full, so each candidate worker has work
            // queued and will publish a result, which wakes us once its ring
            // is down to low water (`worker_main`). Only the pauses of a
            // spin, never the budget: a spin that waits for one free slot
            // succeeds after about one page, submits one page and spins
            // again, so the submitter would burn a core for the whole run
            // (32 us of CPU per page against 16 for the compression, issue
            // 14). Sleeping until half the ring is free costs one futex
            // round trip per depth/2 pages instead (docs/pool.md, "Spin
            // budget").
            let (workers, submitted) = (&self.workers, &self.submitted);
            let room = |w: usize| submitted[w] < limit && workers[w].tx.count() < workers[w].tx.capacity();
            let has_room = || match pinned {
                Some(w) => room(w as usize).then_some(()),
                None => (0..workers.len()).any(room).then_some(()),
            };
            if spin_for(Spin::PAUSES_ONLY, has_room).is_some() {
                continue;
            }
            // A second handle on the shared state: the retry borrows `self`.
            let shared = Arc::clone(&self.shared);
            match handoff::sleep_for_space(&shared.waiter, || self.try_enqueue(slot, pinned, limit)) {
                Ok(w) => {
                    self.queued(w);
                    return Ok(());
                }
                Err(s) => slot = s,
            }
        }
    }

    /// A job was queued on worker `w`: count it and wake the worker.
    #[inline]
    fn queued(&mut self, w: usize) {
        self.in_flight += 1;
        if handoff::job_queued(&self.workers[w].wake) {
            self.counters.wakeups += 1;
        }
    }

    /// One enqueue attempt on the pinned worker, or round robin over the
    /// workers fed fewer than `limit` pages; returns the worker that took it.
    #[inline]
    fn try_enqueue(&mut self, mut slot: SlotBox<J>, pinned: Option<u32>, limit: u64) -> std::result::Result<usize, SlotBox<J>> {
        let n = self.workers.len();
        let (first, tries) = match pinned {
            Some(w) => (w as usize, 1),
            None => (self.next, n),
        };
        for i in 0..tries {
            let w = (first + i) % n;
            if self.submitted[w] >= limit {
                continue;
            }
            slot.worker = w as u32;
            let key = slot.key;
            self.tsan.release(&*slot);
            match self.workers[w].tx.enqueue(slot) {
                Ok(()) => {
                    self.routes.add(key, w as u32);
                    self.submitted[w] += 1;
                    if pinned.is_none() {
                        self.next = (w + 1) % n;
                    }
                    return Ok(w);
                }
                Err(s) => slot = s,
            }
        }
        Err(slot)
    }

    /// Takes the oldest ready result, if any.
    #[inline]
    pub fn poll(&mut self) -> Option<SlotBox<J>> {
        let slot = self.ready.pop_front().or_else(|| self.done.dequeue())?;
        self.collected(&slot);
        Some(slot)
    }

    #[inline]
    fn collected(&mut self, slot: &Slot<J>) {
        self.tsan.acquire(slot);
        self.in_flight -= 1;
        self.routes.remove(slot.key);
        self.counters.per_worker[slot.worker as usize] += 1;
    }

    /// Takes the oldest result, sleeping until one is ready; `None` when
    /// nothing is in flight.
    pub fn wait_one(&mut self) -> Option<SlotBox<J>> {
        if let Some(s) = self.poll() {
            return Some(s);
        }
        if self.in_flight == 0 {
            return None;
        }
        // Something is in flight and neither ready nor on the done ring: a
        // worker holds it and will publish it, then wake us.
        let s = handoff::wait_result(&self.shared.waiter, &self.done, self.spin);
        self.collected(&s);
        Some(s)
    }

    /// Blocks until every submission has a result ready (they stay queued
    /// for `poll`, in order).
    pub fn flush(&mut self) {
        while self.ready.len() < self.in_flight {
            let s = handoff::wait_result(&self.shared.waiter, &self.done, self.spin);
            self.ready.push_back(s);
        }
    }
}

impl<J: Send + 'static> Drop for Engine<J> {
    fn drop(&mut self) {
        handoff::request_shutdown(&self.shared.shutdown, self.workers.iter().map(|w| &*w.wake));
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                // A worker catches panics from the job; a panic elsewhere in
                // it is a bug we cannot report from a destructor.
                let _ = t.join();
            }
        }
        // Slots still queued are freed when the rings drop.
    }
}

/// What a worker thread owns besides its `Work`.
struct WorkerCtx<J: Send + 'static> {
    rx: Consumer<SlotBox<J>>,
    done: MpProducer<SlotBox<J>>,
    wake: Arc<WakeFlag>,
    shared: Arc<Shared>,
    tsan: Tsan,
    /// How to spin before sleeping (`wake::Spin::for_pool`).
    spin: Spin,
    /// Ring count at or below which a space-waiting submitter is woken.
    low_water: u32,
}

fn worker_main<W: Work>(mut work: W, ctx: WorkerCtx<W::Job>) {
    let WorkerCtx { rx, done, wake, shared, tsan, spin, low_water } = ctx;
    while let Some(mut slot) = handoff::next_job(&rx, &wake, &shared.shutdown, spin) {
        tsan.acquire(&*slot);
        // Relaxed: a shortcut only; pages queued at shutdown are dropped,
        // not processed (their memory may be gone once free returns).
        if shared.shutdown.load(Ordering::Relaxed) {
            drop(slot);
            continue;
        }
        if catch_unwind(AssertUnwindSafe(|| work.run(&mut slot.job))).is_err() {
            W::fail(&mut slot.job);
        }
        tsan.release(&*slot);
        // The done ring holds max_in_flight >= every slot that exists in
        // flight, so this never loops; be robust if it ever did.
        while let Err(s) = done.enqueue(slot) {
            slot = s;
            crate::sync::yield_now();
        }
        // Wakes a submitter waiting for a result, or for space once this
        // ring is down to half (`low_water`, hysteresis).
        handoff::result_published(&shared.waiter, rx.count(), low_water);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Work for Echo {
        type Job = (u64, i32);
        fn run(&mut self, job: &mut Self::Job) {
            if job.0 == 13 {
                panic!("injected failure");
            }
            job.1 = 1;
        }
        fn fail(job: &mut Self::Job) {
            job.1 = -libc::EIO;
        }
    }

    fn slot(key: u64, seq: u64) -> SlotBox<(u64, i32)> {
        Box::new(Slot { key, worker: 0, job: (seq, 0) })
    }

    #[test]
    fn same_key_in_order_and_panics_reported() {
        let mut e = Engine::new(3, 2, 0, "vmig-test", |_| Ok(Echo)).unwrap();
        let n: u64 = if cfg!(miri) { 50 } else { 20_000 };
        let mut last = std::collections::HashMap::new();
        let mut got = 0;
        let mut seq = 100;
        while got < n {
            if seq < 100 + n {
                let key = seq % 5;
                let s = if seq == 113 { slot(key, 13) } else { slot(key, seq) };
                if e.submit(s, false).is_ok() {
                    seq += 1;
                }
            }
            while let Some(r) = e.poll() {
                got += 1;
                if r.job.0 == 13 {
                    assert_eq!(r.job.1, -libc::EIO);
                    continue;
                }
                assert_eq!(r.job.1, 1);
                let prev = last.insert(r.key, r.job.0);
                assert!(prev.is_none_or(|p| p < r.job.0), "key {} out of order", r.key);
            }
        }
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.counters.per_worker.iter().sum::<u64>(), n);
    }

    #[test]
    fn wait_flush_and_drop_in_flight() {
        let mut e = Engine::new(2, 4, 0, "vmig-test", |_| Ok(Echo)).unwrap();
        for i in 0..8 {
            e.submit(slot(i, i), true).unwrap();
        }
        e.flush();
        assert_eq!(e.ready.len(), 8);
        for _ in 0..8 {
            assert!(e.wait_one().is_some());
        }
        assert!(e.wait_one().is_none());
        for i in 0..6 {
            e.submit(slot(i, i), true).unwrap();
        }
        drop(e); // joins with pages in flight
    }

    #[test]
    fn busy_when_results_uncollected() {
        let mut e = Engine::new(1, 2, 0, "vmig-test", |_| Ok(Echo)).unwrap();
        let max = e.max_in_flight();
        for i in 0..max as u64 {
            e.submit(slot(i, i), true).unwrap();
        }
        let (err, _) = e.submit(slot(99, 99), true).unwrap_err();
        assert_eq!(err, Error::Busy);
        assert_eq!(e.counters.busy, 1);
    }

    /// A `Work` that counts the live workers: created by `make_work`,
    /// dropped when its thread's `worker_main` returns. The drop lingers so
    /// that a worker that was not joined is still counted when `new` returns.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);
    impl Work for Counted {
        type Job = (u64, i32);
        fn run(&mut self, _: &mut Self::Job) {}
        fn fail(_: &mut Self::Job) {}
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn failed_construction_joins_started_workers() {
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = std::sync::atomic::AtomicUsize::new(0);
        let r = Engine::new(4, 2, 0, "vmig-test", |i| {
            if i == 2 {
                return Err(Error::OutOfMemory);
            }
            live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Counted(live.clone()))
        });
        assert_eq!(r.err(), Some(Error::OutOfMemory));
        assert_eq!(started.into_inner(), 2, "workers 0 and 1 were started");
        // Every started worker's thread has exited and dropped its Work
        // before `new` returned: they were joined, not left running.
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0, "started workers still alive");
        // The engine's own references (rings, shared state) are gone too.
        assert_eq!(Arc::strong_count(&live), 1);
    }
}
