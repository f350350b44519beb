//! Multi-threaded stress of the ring: several producers, one consumer, tens
//! of millions of items in a release build (fewer in debug and under Miri).
//! The consumer checks that every item arrives exactly once and that each
//! producer's items arrive in the order it enqueued them. Producers mix
//! single and burst enqueues, the consumer single and burst dequeues.

use std::num::NonZeroUsize;
use std::thread;

use vmig::ffi::ring::*;

/// Items per producer: scaled for the build (Miri runs ~10^5x slower).
fn per_producer(release: usize) -> usize {
    if cfg!(miri) {
        release / 20_000
    } else if cfg!(debug_assertions) {
        release / 50
    } else {
        release
    }
}

/// Producer `p` of `producers` sends `p + 1 + k * producers`, k = 0.. .
fn value(p: usize, k: usize, producers: usize) -> usize {
    p + 1 + k * producers
}

/// Checks no loss, no duplicate, per-producer FIFO.
struct Checker {
    next: Vec<usize>,
    seen: usize,
}

impl Checker {
    fn new(producers: usize) -> Self {
        Checker { next: (0..producers).map(|p| p + 1).collect(), seen: 0 }
    }
    fn see(&mut self, v: usize) {
        let producers = self.next.len();
        let p = (v - 1) % producers;
        assert_eq!(v, self.next[p], "producer {p}: item lost, duplicated or reordered");
        self.next[p] += producers;
        self.seen += 1;
    }
}

/// Spins, then yields: on 2 cores the thread we wait for may be descheduled.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins % 64 == 0 {
        thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

fn consume(rx: vmig::ring::Consumer<NonZeroUsize>, producers: usize, total: usize) {
    let mut check = Checker::new(producers);
    let mut out = Vec::with_capacity(64);
    let mut spins = 0;
    while check.seen < total {
        // Alternate single and burst dequeues (bursts of 1..=61 items).
        let got = if check.seen % 3 == 0 {
            match rx.dequeue() {
                Some(v) => {
                    check.see(v.get());
                    1
                }
                None => 0,
            }
        } else {
            let n = rx.dequeue_burst(&mut out, 1 + (check.seen % 61) as u32);
            for v in out.drain(..) {
                check.see(v.get());
            }
            n
        };
        if got == 0 {
            backoff(&mut spins);
        }
    }
    assert!(rx.dequeue().is_none(), "an item beyond what was sent");
}

/// Enqueues `per` items for producer `p`, mixing singles and bursts.
fn produce(p: usize, producers: usize, per: usize, mut single: impl FnMut(NonZeroUsize) -> bool, mut burst: impl FnMut(&mut Vec<NonZeroUsize>)) {
    let mut k = 0;
    let mut spins = 0;
    let mut buf = Vec::with_capacity(64);
    while k < per {
        if (k / 7 + p) % 2 == 0 {
            if single(nz(value(p, k, producers))) {
                k += 1;
            } else {
                backoff(&mut spins);
            }
        } else {
            let len = (1 + (k + p) % 37).min(per - k);
            buf.extend((k..k + len).map(|j| nz(value(p, j, producers))));
            let before = buf.len();
            burst(&mut buf);
            let moved = before - buf.len();
            // Whatever did not fit is retried next round, in order.
            buf.clear();
            if moved == 0 {
                backoff(&mut spins);
            }
            k += moved;
        }
    }
}

#[test]
fn mpsc_four_producers() {
    const PRODUCERS: usize = 4;
    let per = per_producer(5_000_000);
    // A small ring keeps it full and empty often, crossing both edges.
    let (tx, rx) = vmig::ring::mpsc::<NonZeroUsize>(64).unwrap();
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                let tx2 = tx.clone();
                produce(p, PRODUCERS, per, |v| tx.enqueue(v).is_ok(), |b| {
                    tx2.enqueue_burst(b);
                })
            })
        })
        .collect();
    drop(tx);
    consume(rx, PRODUCERS, PRODUCERS * per);
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn spsc() {
    let per = per_producer(10_000_000);
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(64).unwrap();
    let h = thread::spawn(move || {
        let tx = std::cell::RefCell::new(tx);
        produce(0, 1, per, |v| tx.borrow_mut().enqueue(v).is_ok(), |b| {
            tx.borrow_mut().enqueue_burst(b);
        })
    });
    consume(rx, 1, per);
    h.join().unwrap();
}

/// The same through the C ABI functions, on a ring laid out in caller memory.
#[test]
fn c_abi_mpsc_in_caller_memory() {
    const PRODUCERS: usize = 3;
    let per = per_producer(1_000_000);
    let size = vmig_ring_memsize(32);
    let layout = std::alloc::Layout::from_size_align(size, VMIG_RING_ALIGN).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc(layout) };
    assert!(!mem.is_null());
    // SAFETY: `mem` is valid for `size` bytes.
    assert_eq!(unsafe { vmig_ring_init(mem.cast(), size, 32, VMIG_RING_MP) }, 0);
    /// The ring handle, shared by the threads.
    #[derive(Clone, Copy)]
    struct Handle(*mut vmig_ring);
    // SAFETY: the ring is built for concurrent use; MP mode allows
    // concurrent enqueues, and only the main thread dequeues.
    unsafe impl Send for Handle {}
    let ring = Handle(mem.cast());
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let ring = ring;
                produce(
                    p,
                    PRODUCERS,
                    per,
                    // SAFETY: a live MP ring; non-NULL item.
                    |v| unsafe { vmig_ring_enqueue(ring.0, std::ptr::without_provenance_mut(v.get())) } == 0,
                    |b| {
                        let ptrs: Vec<*mut std::ffi::c_void> =
                            b.iter().map(|v| std::ptr::without_provenance_mut(v.get())).collect();
                        // SAFETY: a live MP ring; `ptrs` holds `len` non-NULL items.
                        let n = unsafe { vmig_ring_enqueue_burst(ring.0, ptrs.as_ptr(), ptrs.len() as u32) };
                        b.drain(..n as usize);
                    },
                )
            })
        })
        .collect();
    let mut check = Checker::new(PRODUCERS);
    let mut out = [std::ptr::null_mut(); 16];
    let mut spins = 0;
    while check.seen < PRODUCERS * per {
        // SAFETY: the only consumer; `out` holds 16 pointers.
        let n = unsafe { vmig_ring_dequeue_burst(ring.0, out.as_mut_ptr(), (check.seen % 16 + 1) as u32) };
        for &v in &out[..n as usize] {
            check.see(v.addr());
        }
        if n == 0 {
            // SAFETY: the only consumer.
            match unsafe { vmig_ring_dequeue(ring.0) } {
                v if v.is_null() => backoff(&mut spins),
                v => check.see(v.addr()),
            }
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    // SAFETY: every thread is done with the ring; the memory is ours.
    unsafe {
        assert!(vmig_ring_empty(ring.0));
        vmig_ring_free(ring.0);
        std::alloc::dealloc(mem, layout);
    }
}

/// A handle crossing to the thread that owns it.
struct Owned<T>(*mut T);
// SAFETY: each handle is used by one thread at a time: made on the main
// thread, moved to its thread, and freed there (the C rule).
unsafe impl<T> Send for Owned<T> {}

/// The per-thread handles of the C ABI (`vmig_ring_producer_*`,
/// `vmig_ring_consumer_*`): `producers` threads, each with its own producer
/// handle, and the consumer handle on this thread. The ring handle is freed
/// as soon as the handles exist, so the run also shows the handles keeping
/// the ring alive (and the last one freeing it: ASan and Miri see a leak or
/// a use after free). Singles and bursts (which cross the slot wrap, and on
/// an SP ring are the bulk copies) on both sides.
fn c_abi_handles(flags: u32, producers: usize, per: usize) {
    let ring = vmig_ring_new(32, flags);
    assert!(!ring.is_null());
    // SAFETY: `ring` is live until freed below; each handle is used by one
    // thread only.
    let (tx, rx) = unsafe {
        let tx: Vec<_> = (0..producers).map(|_| Owned(vmig::ffi::ring_handle::vmig_ring_producer_new(ring))).collect();
        let rx = vmig::ffi::ring_handle::vmig_ring_consumer_new(ring);
        vmig_ring_free(ring);
        (tx, rx)
    };
    assert!(tx.iter().all(|p| !p.0.is_null()) && !rx.is_null());
    use vmig::ffi::ring_handle::*;
    let threads: Vec<_> = tx
        .into_iter()
        .enumerate()
        .map(|(p, h)| {
            thread::spawn(move || {
                let h = h;
                produce(
                    p,
                    producers,
                    per,
                    // SAFETY: this thread's live handle; non-NULL item.
                    |v| unsafe { vmig_ring_producer_enqueue(h.0, std::ptr::without_provenance_mut(v.get())) } == 0,
                    |b| {
                        let ptrs: Vec<*mut std::ffi::c_void> =
                            b.iter().map(|v| std::ptr::without_provenance_mut(v.get())).collect();
                        // SAFETY: this thread's live handle; `ptrs` holds `len` non-NULL items.
                        let n = unsafe { vmig_ring_producer_enqueue_burst(h.0, ptrs.as_ptr(), ptrs.len() as u32) };
                        assert!(n >= 0, "enqueue_burst failed: {n}");
                        b.drain(..n as usize);
                    },
                );
                // SAFETY: this thread's handle, not used again.
                unsafe { vmig_ring_producer_free(h.0) };
            })
        })
        .collect();
    let mut check = Checker::new(producers);
    let mut out = [std::ptr::null_mut(); 40];
    let mut spins = 0;
    while check.seen < producers * per {
        // Bursts of 1..=40 (more than the ring holds, clipped), then a single.
        // SAFETY: the consumer handle, this thread's; `out` holds 40 pointers.
        let n = unsafe { vmig_ring_consumer_dequeue_burst(rx, out.as_mut_ptr(), (check.seen % 40 + 1) as u32) };
        assert!(n >= 0, "dequeue_burst failed: {n}");
        for &v in &out[..n as usize] {
            check.see(v.addr());
        }
        let mut one = std::ptr::null_mut();
        // SAFETY: as above; `one` is a valid out pointer.
        match unsafe { vmig_ring_consumer_dequeue(rx, &mut one) } {
            0 => check.see(one.addr()),
            e => {
                assert_eq!(e, -libc::ENOENT);
                if n == 0 {
                    backoff(&mut spins);
                }
            }
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut one = std::ptr::null_mut();
    // SAFETY: the consumer handle; then freed, which frees the ring.
    unsafe {
        assert_eq!(vmig_ring_consumer_dequeue(rx, &mut one), -libc::ENOENT, "an item beyond what was sent");
        assert_eq!(vmig_ring_consumer_count(rx), 0);
        vmig_ring_consumer_free(rx);
    }
}

#[test]
fn c_abi_handles_spsc() {
    c_abi_handles(0, 1, per_producer(4_000_000));
}

#[test]
fn c_abi_handles_mpsc() {
    c_abi_handles(VMIG_RING_MP, 3, per_producer(1_000_000));
}
