//! loom models of the pool's sleep/wake hand-off (src/pool/wake.rs) on the
//! real vmig ring. Built only with `--cfg loom`, where `crate::sync` swaps in
//! loom's atomics, fences, mutex and condvar, so these models exercise the
//! library's own WakeFlag and RawRing code:
//!
//!     RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!         cargo test --release --test loom_pool
//!
//! A lost wake-up shows as a loom deadlock (every thread blocked). Each
//! model mirrors the steps of `worker_main` / `Engine::submit` /
//! `Engine::wait_one` in src/pool/worker.rs.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use vmig::pool::wake::WakeFlag;

/// Worker side: sleep only when the ring is empty; the submitter wakes it
/// only if it announced sleep. Two pages, ring of 2.
#[test]
fn worker_is_never_left_asleep_with_work_queued() {
    loom::model(|| {
        let (mut tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
        let flag = Arc::new(WakeFlag::new());
        let f = flag.clone();
        let worker = thread::spawn(move || {
            let mut got = 0;
            while got < 2 {
                if rx.dequeue().is_some() {
                    got += 1;
                    continue;
                }
                f.prepare_sleep();
                if rx.dequeue().is_some() {
                    f.cancel_sleep();
                    got += 1;
                    continue;
                }
                f.sleep();
            }
        });
        for i in 0..2 {
            tx.enqueue(Box::new(i)).unwrap();
            flag.wake_if_sleeping();
        }
        worker.join().unwrap();
    });
}

/// Migration-thread side: two workers publish on the MPSC done ring; the
/// waiter sleeps only when nothing is ready and is always woken.
#[test]
fn result_waiter_is_always_woken() {
    loom::model(|| {
        let (tx, rx) = vmig::ring::mpsc::<Box<u32>>(2).unwrap();
        let waiter = Arc::new(WakeFlag::new());
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (tx, w) = (tx.clone(), waiter.clone());
                thread::spawn(move || {
                    tx.enqueue(Box::new(i)).unwrap();
                    if w.is_sleeping() {
                        w.wake_sleeper();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut got = 0;
        while got < 2 {
            if rx.dequeue().is_some() {
                got += 1;
                continue;
            }
            waiter.prepare_sleep();
            if rx.dequeue().is_some() {
                waiter.cancel_sleep();
                got += 1;
                continue;
            }
            waiter.sleep();
        }
        for w in workers {
            w.join().unwrap();
        }
    });
}

/// Shutdown: the freeing thread sets the flag (SeqCst) and wakes; the worker
/// re-checks it after F1. It must exit, never sleep through it.
#[test]
fn shutdown_reaches_a_sleeping_worker() {
    loom::model(|| {
        let flag = Arc::new(WakeFlag::new());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (f, s) = (flag.clone(), shutdown.clone());
        let worker = thread::spawn(move || loop {
            if s.load(Ordering::Relaxed) {
                return;
            }
            f.prepare_sleep();
            if s.load(Ordering::SeqCst) {
                f.cancel_sleep();
                return;
            }
            f.sleep();
        });
        shutdown.store(true, Ordering::SeqCst);
        flag.wake_if_sleeping();
        worker.join().unwrap();
    });
}

/// Both directions at once, with the space hysteresis: the submitter puts 3
/// pages through a ring of 2, sleeping when it is full; the worker sleeps
/// when it is empty, and wakes a space-waiting submitter only once its ring
/// is down to half (low water 1), as `worker_main` does.
#[test]
fn submitter_waiting_for_space_and_worker_waiting_for_work() {
    loom::model(|| {
        let (mut tx, rx) = vmig::ring::spsc::<Box<u32>>(2).unwrap();
        let worker_flag = Arc::new(WakeFlag::new());
        let waiter = Arc::new(WakeFlag::new());
        let wants_space = Arc::new(AtomicBool::new(false));
        let (wf, wt, ws) = (worker_flag.clone(), waiter.clone(), wants_space.clone());
        let worker = thread::spawn(move || {
            let mut got = 0;
            while got < 3 {
                let job = match rx.dequeue() {
                    Some(j) => j,
                    None => {
                        wf.prepare_sleep();
                        match rx.dequeue() {
                            Some(j) => {
                                wf.cancel_sleep();
                                j
                            }
                            None => {
                                wf.sleep();
                                continue;
                            }
                        }
                    }
                };
                drop(job);
                got += 1;
                if wt.is_sleeping() && (!ws.load(Ordering::Relaxed) || rx.count() <= 1) {
                    wt.wake_sleeper();
                }
            }
        });
        for i in 0..3 {
            let mut item = Box::new(i);
            loop {
                match tx.enqueue(item) {
                    Ok(()) => {
                        worker_flag.wake_if_sleeping();
                        break;
                    }
                    Err(back) => item = back,
                }
                wants_space.store(true, Ordering::Relaxed);
                waiter.prepare_sleep();
                match tx.enqueue(item) {
                    Ok(()) => {
                        waiter.cancel_sleep();
                        worker_flag.wake_if_sleeping();
                        break;
                    }
                    Err(back) => item = back,
                }
                waiter.sleep();
            }
        }
        worker.join().unwrap();
    });
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
