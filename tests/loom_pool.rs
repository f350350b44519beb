//! loom models of the pool's sleep/wake hand-off on the real vmig ring.
//! Built only with `--cfg vmig_loom`, where `crate::sync` swaps in loom's
//! atomics and fences. Every step a thread takes here is the library's own
//! function (`vmig::pool::loom_hooks`: `src/pool/handoff.rs`, the steps
//! `worker_main`, `Engine::submit`, `Engine::wait_one`/`flush` and
//! `Engine::drop` call), so the models check the shipped protocol:
//!
//!     RUSTFLAGS="--cfg vmig_loom" LOOM_MAX_PREEMPTIONS=3 \
//!         cargo test --release --test loom_pool
//!
//! A lost wake-up shows as a loom deadlock (every thread blocked).
#![cfg(vmig_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use vmig::pool::loom_hooks::{
    job_queued, next_job, request_shutdown, result_published, sleep_for_space, wait_result, Spin, Waiter, WakeFlag,
};

/// No spin past the pauses: the wait goes straight to the sleep protocol
/// (a pool whose threads outnumber the CPUs, or `spin_ns` 0).
const NO_SPIN: Spin = Spin { budget_ns: 0 };
/// A spin budget: under loom, one more poll after a `yield_now` before the
/// sleep (`wake::spin_for`), so a model covers the spin that catches the
/// event as well as the one that gives up and sleeps.
const SPIN: Spin = Spin { budget_ns: 5_000 };

/// Worker side: the worker takes jobs with `next_job` (sleeping when its
/// ring is empty); the submitter queues two and wakes it with `job_queued`.
fn worker_is_never_left_asleep_with_work_queued(spin: Spin) {
    loom::model(move || {
        let (mut tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
        let flag = Arc::new(WakeFlag::new());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (f, s) = (flag.clone(), shutdown.clone());
        let worker = thread::spawn(move || {
            for want in 0..2 {
                assert_eq!(next_job(&rx, &f, &s, spin).as_deref(), Some(&want));
            }
        });
        for i in 0..2 {
            tx.enqueue(Box::new(i)).unwrap();
            job_queued(&flag);
        }
        worker.join().unwrap();
    });
}

/// Migration-thread side: two workers publish on the MPSC done ring and
/// call `result_published`; the submitter waits in `wait_result`.
fn result_waiter_is_always_woken(spin: Spin) {
    loom::model(move || {
        let (tx, rx) = vmig::ring::mpsc::<Box<u32>>(2).unwrap();
        let waiter = Arc::new(Waiter::default());
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (tx, w) = (tx.clone(), waiter.clone());
                thread::spawn(move || {
                    tx.enqueue(Box::new(i)).unwrap();
                    result_published(&w, 0, 0);
                })
            })
            .collect();
        drop(tx);
        let mut seen = [false; 2];
        for _ in 0..2 {
            let r = wait_result(&waiter, &rx, spin);
            seen[*r as usize] = true;
        }
        assert_eq!(seen, [true, true]);
        for w in workers {
            w.join().unwrap();
        }
    });
}

/// Shutdown: `request_shutdown` (Engine::drop's step) must reach a worker
/// that is about to sleep in `next_job`; it returns None, never sleeps
/// through it.
fn shutdown_reaches_a_sleeping_worker(spin: Spin) {
    loom::model(move || {
        let (_tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
        let flag = Arc::new(WakeFlag::new());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (f, s) = (flag.clone(), shutdown.clone());
        let worker = thread::spawn(move || assert!(next_job(&rx, &f, &s, spin).is_none()));
        request_shutdown(&shutdown, [&*flag]);
        worker.join().unwrap();
    });
}

/// Both directions at once, with the space hysteresis: the submitter puts
/// 3 jobs through a ring of 2, sleeping in `sleep_for_space` when it is
/// full; the worker sleeps in `next_job` when it is empty and calls
/// `result_published` with low water 1, as `worker_main` does.
fn submitter_waiting_for_space_and_worker_waiting_for_work(spin: Spin) {
    loom::model(move || {
        let (mut tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
        let worker_flag = Arc::new(WakeFlag::new());
        let waiter = Arc::new(Waiter::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (wf, wt, s) = (worker_flag.clone(), waiter.clone(), shutdown.clone());
        let worker = thread::spawn(move || {
            for want in 0..3 {
                let job = next_job(&rx, &wf, &s, spin);
                assert_eq!(job.as_deref(), Some(&want));
                result_published(&wt, rx.count(), 1);
            }
        });
        for i in 0..3 {
            let mut item = Box::new(i);
            loop {
                match tx.enqueue(item) {
                    Ok(()) => break,
                    Err(back) => item = back,
                }
                match sleep_for_space(&waiter, || tx.enqueue(item)) {
                    Ok(()) => break,
                    Err(back) => item = back,
                }
            }
            job_queued(&worker_flag);
        }
        worker.join().unwrap();
    });
}

#[test]
fn worker_is_never_left_asleep_with_work_queued_no_spin() {
    worker_is_never_left_asleep_with_work_queued(NO_SPIN);
}

#[test]
fn worker_is_never_left_asleep_with_work_queued_spin_then_sleep() {
    worker_is_never_left_asleep_with_work_queued(SPIN);
}

#[test]
fn result_waiter_is_always_woken_no_spin() {
    result_waiter_is_always_woken(NO_SPIN);
}

#[test]
fn result_waiter_is_always_woken_spin_then_sleep() {
    result_waiter_is_always_woken(SPIN);
}

#[test]
fn shutdown_reaches_a_sleeping_worker_no_spin() {
    shutdown_reaches_a_sleeping_worker(NO_SPIN);
}

#[test]
fn shutdown_reaches_a_sleeping_worker_spin_then_sleep() {
    shutdown_reaches_a_sleeping_worker(SPIN);
}

#[test]
fn submitter_waiting_for_space_and_worker_waiting_for_work_no_spin() {
    submitter_waiting_for_space_and_worker_waiting_for_work(NO_SPIN);
}

#[test]
fn submitter_waiting_for_space_and_worker_waiting_for_work_spin_then_sleep() {
    submitter_waiting_for_space_and_worker_waiting_for_work(SPIN);
}

/// Litmus check that this loom version models SeqCst fences (store
/// buffering with fences, the pattern `wake.rs` relies on).
#[test]
fn loom_models_store_buffering_with_fences() {
    use loom::sync::atomic::{fence, AtomicUsize};
    loom::model(|| {
        let x = Arc::new(AtomicUsize::new(0));
        let y = Arc::new(AtomicUsize::new(0));
        let (x2, y2) = (x.clone(), y.clone());
        let t = thread::spawn(move || {
            x2.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            y2.load(Ordering::Relaxed)
        });
        y.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let r2 = x.load(Ordering::Relaxed);
        let r1 = t.join().unwrap();
        assert!(r1 == 1 || r2 == 1, "both loads missed the other store");
    });
}
