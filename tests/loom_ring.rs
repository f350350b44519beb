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

