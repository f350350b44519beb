//! The pool's sleep/wake steps, as functions: the workers and the
//! submitter (`worker.rs`) run exactly these, and so do the loom models in
//! `tests/loom_pool.rs` (through `pool::loom_hooks`), so the models check
//! the shipped protocol, not a copy of it. The protocol and why no wake-up
//! is lost: [`super::wake`].

use super::wake::{spin_for, Spin, WakeFlag};
use crate::ring::{Consumer, RingItem};
use crate::sync::{AtomicBool, Ordering};

/// The submitter's side: the flag it sleeps on and why it sleeps.
#[derive(Debug)]
pub struct Waiter {
    /// The submitter's flag (`wait_result`, `sleep_for_space`).
    pub flag: WakeFlag,
    /// Why it sleeps: `true` = for ring space, `false` = for a result.
    /// Written before `prepare_sleep` (F1), read by workers after
    /// `is_sleeping` (F2): the Dekker pair orders it like the flag itself.
    pub wants_space: AtomicBool,
}

impl Default for Waiter {
    fn default() -> Self {
        Waiter { flag: WakeFlag::new(), wants_space: AtomicBool::new(false) }
    }
}

/// Sleeper: announce sleep, re-check, and sleep only if the re-check
/// failed. `Ok` is the re-check's success (no sleep); `Err` its failure,
/// returned after the sleep: the caller goes round its loop.
#[inline]
pub fn sleep_unless<T, E>(flag: &WakeFlag, recheck: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    flag.prepare_sleep();
    match recheck() {
        Ok(v) => {
            flag.cancel_sleep();
            Ok(v)
        }
        Err(e) => {
            flag.sleep();
            Err(e)
        }
    }
}

/// Worker: the next job from its ring, spinning then sleeping while it is
/// empty; `None` once `shutdown` is set.
pub fn next_job<T: RingItem>(rx: &Consumer<T>, wake: &WakeFlag, shutdown: &AtomicBool, spin: Spin) -> Option<T> {
    loop {
        if let Some(j) = rx.dequeue() {
            return Some(j);
        }
        // Relaxed: a hint only; the decisive check is after F1 below.
        if shutdown.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(j) = spin_for(spin, || rx.dequeue()) {
            return Some(j);
        }
        let woke = sleep_unless(wake, || {
            // SeqCst: the load after F1 that pairs with the shutdown store
            // + F2 in `request_shutdown`.
            if shutdown.load(Ordering::SeqCst) {
                return Ok(None);
            }
            rx.dequeue().map(Some).ok_or(())
        });
        if let Ok(j) = woke {
            return j;
        }
    }
}

/// Worker, after publishing a result on the done ring (`queued`: jobs
/// still in its own ring). A submitter waiting for a result is woken at
/// once; one waiting for ring space only once this ring is down to
/// `low_water` (hysteresis): it then refills depth/2 slots per wake-up, and
/// the pages still queued keep this worker busy while it wakes (~70 us).
/// Every full ring drains to `low_water`, so the wake cannot be missed.
#[inline]
pub fn result_published(waiter: &Waiter, queued: u32, low_water: u32) {
    if waiter.flag.is_sleeping() {
        // Relaxed: ordered by F1/F2, see `Waiter::wants_space`.
        if !waiter.wants_space.load(Ordering::Relaxed) || queued <= low_water {
            waiter.flag.wake_sleeper();
        }
    }
}

/// Submitter: a result from the done ring, spinning then sleeping until a
/// worker publishes one. The caller knows one is in flight: a worker holds
/// it and will publish it, then wake the submitter.
pub fn wait_result<T: RingItem>(waiter: &Waiter, done: &Consumer<T>, spin: Spin) -> T {
    loop {
        if let Some(r) = spin_for(spin, || done.dequeue()) {
            return r;
        }
        // Relaxed: ordered by F1 in `prepare_sleep`, read after F2.
        waiter.wants_space.store(false, Ordering::Relaxed);
        if let Ok(r) = sleep_unless(&waiter.flag, || done.dequeue().ok_or(())) {
            return r;
        }
    }
}

/// Submitter, every candidate ring full: sleep unless `retry` (the enqueue
/// attempt) now succeeds. Each candidate worker has work queued and will
/// publish a result, which wakes the submitter ([`result_published`]).
#[inline]
pub fn sleep_for_space<T, E>(waiter: &Waiter, retry: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    // Relaxed: ordered by F1 in `prepare_sleep`, read after F2.
    waiter.wants_space.store(true, Ordering::Relaxed);
    sleep_unless(&waiter.flag, retry)
}

/// Submitter, after queueing a job on a worker's ring: wakes the worker if
/// it announced sleep; returns whether it did.
#[inline]
pub fn job_queued(worker: &WakeFlag) -> bool {
    worker.wake_if_sleeping()
}

/// Owner, stopping the pool: sets `shutdown`, then wakes every sleeping
/// worker; each exits at its next [`next_job`].
pub fn request_shutdown<'a>(shutdown: &AtomicBool, workers: impl IntoIterator<Item = &'a WakeFlag>) {
    // Relaxed would do for the flag itself; SeqCst keeps it before F2 in
    // `wake_if_sleeping`, pairing with F1 before the worker's re-check.
    shutdown.store(true, Ordering::SeqCst);
    for w in workers {
        w.wake_if_sleeping();
    }
}
