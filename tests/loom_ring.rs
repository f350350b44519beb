//! loom models of the ring's hand-offs, run against the real code (the ring
//! takes its atomics from `crate::sync`, which is loom's under `--cfg vmig_loom`).
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg vmig_loom" cargo test --release --test loom_ring
//! ```
//!
//! Capacity 2 with more items than slots, so every model crosses the full
//! and the empty edge and wraps the slots; the indices start just below
//! `u32::MAX`, so they wrap too. Each item carries a `loom::cell::UnsafeCell`
//! written by the producer before enqueueing and read by the consumer after
//! dequeueing: loom reports a data race if the ring's Release/Acquire pairs
//! do not order them. The consumer checks no loss, no duplicate and
//! per-producer FIFO.
#![cfg(vmig_loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use vmig::ring::loom_hooks::{mpsc_at, spsc_at};

/// Indices start here so that the models cross the `u32` wrap.
const START: u32 = u32::MAX - 1;

struct Payload {
    producer: usize,
    seq: usize,
    data: UnsafeCell<usize>,
}

fn payload(producer: usize, seq: usize) -> Box<Payload> {
    let p = Box::new(Payload { producer, seq, data: UnsafeCell::new(0) });
    // A plain (non-atomic) write before enqueue: must be visible after dequeue.
    // SAFETY: `p` is not shared yet; loom checks the access.
    p.data.with_mut(|d| unsafe { *d = 1000 * producer + seq });
    p
}

/// Checks one dequeued item against what each producer sent so far.
fn check(next: &mut [usize], p: &Payload) {
    // SAFETY: the consumer owns `p` now; loom reports a race if the
    // producer's write is not ordered before this read.
    let seen = p.data.with(|d| unsafe { *d });
    assert_eq!(seen, 1000 * p.producer + p.seq, "payload written before enqueue not visible");
    assert_eq!(p.seq, next[p.producer], "lost, duplicated or reordered item");
    next[p.producer] += 1;
}

#[test]
fn spsc_wraps_and_hands_off_payloads() {
    loom::model(|| {
        const ITEMS: usize = 3;
        let (mut tx, rx) = spsc_at::<Box<Payload>>(2, START).unwrap();
        let producer = thread::spawn(move || {
            for seq in 0..ITEMS {
                let mut item = payload(0, seq);
                while let Err(back) = tx.enqueue(item) {
                    item = back;
                    thread::yield_now();
                }
            }
            tx
        });
        let mut next = [0];
        while next[0] < ITEMS {
            match rx.dequeue() {
                Some(p) => check(&mut next, &p),
                None => thread::yield_now(),
            }
        }
        let tx = producer.join().unwrap();
        assert!(rx.dequeue().is_none());
        assert_eq!(tx.count(), 0);
    });
}

#[test]
fn spsc_bursts_wrap_and_hand_off_payloads() {
    loom::model(|| {
        const ITEMS: usize = 4;
        let (mut tx, rx) = spsc_at::<Box<Payload>>(2, START).unwrap();
        let producer = thread::spawn(move || {
            let mut items: Vec<_> = (0..ITEMS).map(|seq| payload(0, seq)).collect();
            while !items.is_empty() {
                if tx.enqueue_burst(&mut items) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut next = [0];
        let mut out = Vec::new();
        while next[0] < ITEMS {
            if rx.dequeue_burst(&mut out, 2) == 0 {
                thread::yield_now();
            }
            for p in out.drain(..) {
                check(&mut next, &p);
            }
        }
        producer.join().unwrap();
    });
}

/// Two producers, one sending two items and one sending one: three items
/// through two slots (full edge, slot wrap, index wrap).
#[test]
fn mpsc_two_producers_wrap_and_hand_off_payloads() {
    loom::model(|| {
        const PER: [usize; 2] = [2, 1];
        let (tx, rx) = mpsc_at::<Box<Payload>>(2, START).unwrap();
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for seq in 0..PER[producer] {
                        let mut item = payload(producer, seq);
                        while let Err(back) = tx.enqueue(item) {
                            item = back;
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0, 0];
        while next.iter().sum::<usize>() < PER.iter().sum() {
            match rx.dequeue() {
                Some(p) => check(&mut next, &p),
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert!(rx.dequeue().is_none());
    });
}

/// One producer enqueues a burst of two while another enqueues single
/// items: the burst's items must come out adjacent.
#[test]
fn mpsc_burst_stays_contiguous() {
    loom::model(|| {
        let (tx, rx) = mpsc_at::<Box<Payload>>(2, START).unwrap();
        let tx2 = tx.clone();
        let burst = thread::spawn(move || {
            let mut items = vec![payload(0, 0), payload(0, 1)];
            while !items.is_empty() {
                if tx.enqueue_burst(&mut items) == 0 {
                    thread::yield_now();
                }
            }
        });
        let single = thread::spawn(move || {
            let mut item = payload(1, 0);
            while let Err(back) = tx2.enqueue(item) {
                item = back;
                thread::yield_now();
            }
        });
        let mut next = [0, 0];
        let mut order = Vec::new();
        while next.iter().sum::<usize>() < 3 {
            match rx.dequeue() {
                Some(p) => {
                    order.push(p.producer);
                    check(&mut next, &p);
                }
                None => thread::yield_now(),
            }
        }
        burst.join().unwrap();
        single.join().unwrap();
        // A call moves a contiguous block. The burst can be cut in two only
        // when the other producer's item holds a slot, and then that item
        // was claimed first: [0, 1, 0] would mean a block was split.
        assert_ne!(order, [0, 1, 0], "burst split");
    });
}


/// The C ABI's per-thread handles (`src/ffi/ring_handle.rs`), through the
/// exported functions: an SP ring of 2 slots, the producer handle sending
/// 3 payloads in bursts (the bulk path: one reservation, the slot copies,
/// one publish), the consumer handle taking them in bursts of 2. The ring
/// handle is freed before the threads start and each handle is freed on
/// its own thread with no join in between, so the last free (either one)
/// tears the ring down: R6/A6 must order the other's accesses before it.
#[test]
fn c_handles_spsc_bursts_and_last_free() {
    use std::ffi::c_void;
    use vmig::ffi::ring::*;
    use vmig::ffi::ring_handle::*;

    /// A handle moving to its thread.
    struct Owned<T>(*mut T);
    // SAFETY: each handle is used by one thread at a time (the C rule).
    unsafe impl<T> Send for Owned<T> {}

    loom::model(|| {
        const ITEMS: usize = 3;
        let ring = vmig_ring_new(2, 0);
        assert!(!ring.is_null());
        // SAFETY: a live ring; the handles are then used by one thread each.
        let (tx, rx) = unsafe { (Owned(vmig_ring_producer_new(ring)), vmig_ring_consumer_new(ring)) };
        assert!(!tx.0.is_null() && !rx.is_null());
        // SAFETY: the ring handle is not used again; the handles hold the ring.
        unsafe { vmig_ring_free(ring) };
        let producer = thread::spawn(move || {
            let tx = tx;
            let items: Vec<*mut c_void> = (0..ITEMS).map(|seq| Box::into_raw(payload(0, seq)).cast()).collect();
            let mut sent = 0;
            while sent < ITEMS {
                // SAFETY: this thread's handle; `ITEMS - sent` non-NULL items.
                let n = unsafe { vmig_ring_producer_enqueue_burst(tx.0, items[sent..].as_ptr(), (ITEMS - sent) as u32) };
                assert!(n >= 0);
                if n == 0 {
                    thread::yield_now();
                }
                sent += n as usize;
            }
            // SAFETY: this thread's handle, not used again.
            unsafe { vmig_ring_producer_free(tx.0) };
        });
        let mut next = [0];
        let mut out = [std::ptr::null_mut(); 2];
        while next[0] < ITEMS {
            // SAFETY: the consumer handle; `out` holds 2 pointers.
            let n = unsafe { vmig_ring_consumer_dequeue_burst(rx, out.as_mut_ptr(), 2) };
            assert!(n >= 0);
            if n == 0 {
                thread::yield_now();
            }
            for &p in &out[..n as usize] {
                // SAFETY: enqueued from `Box::into_raw` above, taken once.
                let item = unsafe { Box::from_raw(p.cast::<Payload>()) };
                check(&mut next, &item);
            }
        }
        let mut one = std::ptr::null_mut();
        // SAFETY: the consumer handle, then freed (maybe the last reference).
        unsafe {
            assert_eq!(vmig_ring_consumer_dequeue(rx, &mut one), -libc::ENOENT);
            vmig_ring_consumer_free(rx);
        }
        producer.join().unwrap();
    });
}

/// Two producer handles on an MP ring and the consumer handle, single
/// items through the exported functions (the per-handle MP path). One item
/// each: with the full edge too (three items, as the typed model above
/// has) the model exceeds loom's branch limit, the handles' creation and
/// free (reference and role atomics) multiplying the interleavings; the
/// full edge of the same `mp_enqueue` is in that model.
#[test]
fn c_handles_mpsc_two_producers() {
    use vmig::ffi::ring::*;
    use vmig::ffi::ring_handle::*;

    struct Owned<T>(*mut T);
    // SAFETY: each handle is used by one thread at a time (the C rule).
    unsafe impl<T> Send for Owned<T> {}

    loom::model(|| {
        const PER: [usize; 2] = [1, 1];
        let ring = vmig_ring_new(2, VMIG_RING_MP);
        assert!(!ring.is_null());
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                // SAFETY: a live ring.
                let tx = Owned(unsafe { vmig_ring_producer_new(ring) });
                assert!(!tx.0.is_null());
                thread::spawn(move || {
                    let tx = tx;
                    for seq in 0..PER[producer] {
                        let item = Box::into_raw(payload(producer, seq)).cast();
                        // SAFETY: this thread's handle; a non-NULL item.
                        while unsafe { vmig_ring_producer_enqueue(tx.0, item) } != 0 {
                            thread::yield_now();
                        }
                    }
                    // SAFETY: this thread's handle, not used again.
                    unsafe { vmig_ring_producer_free(tx.0) };
                })
            })
            .collect();
        // SAFETY: a live ring; then the ring handle is not used again.
        let rx = unsafe { vmig_ring_consumer_new(ring) };
        assert!(!rx.is_null());
        // SAFETY: as above.
        unsafe { vmig_ring_free(ring) };
        let mut next = [0, 0];
        let mut one = std::ptr::null_mut();
        while next.iter().sum::<usize>() < PER.iter().sum() {
            // SAFETY: the consumer handle; `one` is a valid out pointer.
            if unsafe { vmig_ring_consumer_dequeue(rx, &mut one) } == 0 {
                // SAFETY: enqueued from `Box::into_raw` above, taken once.
                let item = unsafe { Box::from_raw(one.cast::<Payload>()) };
                check(&mut next, &item);
            } else {
                thread::yield_now();
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        // SAFETY: the consumer handle, the last reference.
        unsafe { vmig_ring_consumer_free(rx) };
    });
}
