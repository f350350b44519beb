//! Ring throughput and latency against the usual Rust queues, in one run.
//!
//! `cargo bench --bench ring` prints, for each scenario, the median of
//! several repetitions (the queues take turns, so drift in machine load
//! touches all alike) and vmig's ratio against every baseline measured in
//! the same run (the machine is shared and noisy: compare ratios, not
//! absolute numbers). `cargo test --benches` runs it in quick mode (tiny
//! counts, one repetition) so the bench keeps compiling and stays correct.
//!
//! Every queue gets the same capacity ([`CAP`]) and the same waiting
//! strategy when it is full or empty ([`Backoff`]), and moves `usize`s
//! (vmig: `NonZeroUsize`, the same word), so the numbers compare the data
//! structures rather than the wake-up policies.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::mpsc::{sync_channel, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use vmig::ffi::ring::{vmig_ring, vmig_ring_dequeue, vmig_ring_enqueue, vmig_ring_free, vmig_ring_new, VMIG_RING_MP};
use vmig::ffi::ring_handle::{
    vmig_ring_consumer, vmig_ring_consumer_dequeue, vmig_ring_consumer_dequeue_burst, vmig_ring_consumer_free,
    vmig_ring_consumer_new, vmig_ring_producer, vmig_ring_producer_enqueue, vmig_ring_producer_enqueue_burst,
    vmig_ring_producer_free, vmig_ring_producer_new,
};

#[path = "support/affinity.rs"]
mod affinity;

/// Slots in every queue under test.
const CAP: usize = 1024;
/// Items per burst in the burst scenario.
const BURST: usize = 32;

struct Params {
    /// Items moved per throughput repetition (split between producers).
    items: usize,
    /// Enqueue+dequeue pairs per latency repetition.
    pairs: usize,
    reps: usize,
}

/// Spin briefly, then yield: on a 2-core host with 3 threads (2 producers +
/// consumer) pure spinning would burn the time slice of the thread we wait for.
struct Backoff(u32);
impl Backoff {
    fn new() -> Self {
        Backoff(0)
    }
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else {
            self.0 = 0;
            thread::yield_now();
        }
    }
}

fn nz(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

/// Checks the consumer saw every producer's items exactly once, in order.
/// Producer `p` sends `p + 1 + k * producers` for k = 0.. (never 0).
struct Order {
    next: Vec<usize>,
}
impl Order {
    fn new(producers: usize) -> Self {
        Order {
            next: (0..producers).map(|p| p + 1).collect(),
        }
    }
    #[inline]
    fn see(&mut self, v: usize) {
        let p = (v - 1) % self.next.len();
        assert_eq!(v, self.next[p], "lost, duplicated or reordered item");
        self.next[p] += self.next.len();
    }
}

/// CPU placement for the next runs, as CPU numbers: entry `p` is producer
/// `p`'s CPU, the last entry the consumer's. `None`: the scheduler places
/// the threads.
///
/// With 2 producers and a consumer on a 2-CPU machine, two threads share a
/// CPU, and which two decides the result more than the queue does (two
/// producers on one CPU never contend on the claim, but they time-slice).
/// The unpinned tables therefore swing between runs; the placement table
/// measures each placement on its own.
static PLACEMENT: Mutex<Option<Vec<usize>>> = Mutex::new(None);

fn pin_to(cpu: usize) {
    affinity::set_affinity(&[cpu]).unwrap_or_else(|e| panic!("sched_setaffinity(CPU {cpu}): {e}"));
}

/// Runs `measure` with the threads pinned as `cpus` says (see
/// [`PLACEMENT`]); `cpus` names CPUs by their index in the process's
/// affinity mask.
fn pinned<R>(cpus: &[usize], measure: impl FnOnce() -> R) -> R {
    let allowed = affinity::allowed_cpus();
    *PLACEMENT.lock().unwrap() = Some(cpus.iter().map(|&i| allowed[i]).collect());
    let r = measure();
    *PLACEMENT.lock().unwrap() = None;
    r
}

/// Runs `producers` threads calling `produce(p, items_of_p)` and the
/// consumer `consume(total)` on this thread; returns items per second.
/// Pinning the consumer and restoring its mask stay outside the timing.
fn run_threads<P, C>(producers: usize, items: usize, produce: P, consume: C) -> f64
where
    P: Fn(usize, usize) + Send + Sync + 'static,
    C: FnOnce(usize),
{
    let per = items / producers;
    let produce = Arc::new(produce);
    let placement = PLACEMENT.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let restore = placement.as_ref().map(|cpus| {
        let allowed = affinity::allowed_cpus();
        pin_to(cpus[cpus.len() - 1]);
        allowed
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let produce = produce.clone();
            let cpu = placement.as_ref().map(|cpus| cpus[p]);
            thread::spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                produce(p, per)
            })
        })
        .collect();
    consume(per * producers);
    let secs = start.elapsed().as_secs_f64();
    for h in handles {
        h.join().unwrap();
    }
    if let Some(allowed) = restore {
        affinity::set_affinity(&allowed).expect("restoring the affinity mask");
    }
    (per * producers) as f64 / secs
}

fn item(p: usize, k: usize, producers: usize) -> usize {
    p + 1 + k * producers
}

/// Producer `p` of `producers` sends its `n` items one at a time;
/// `try_send` says whether the queue took the item (full: wait, retry).
fn send_each(p: usize, n: usize, producers: usize, mut try_send: impl FnMut(usize) -> bool) {
    for k in 0..n {
        let v = item(p, k, producers);
        let mut b = Backoff::new();
        while !try_send(v) {
            b.wait();
        }
    }
}

/// The consumer takes `total` items one at a time, checking each
/// producer's order; `try_receive` gives `None` when the queue is empty.
fn receive_each(total: usize, producers: usize, mut try_receive: impl FnMut() -> Option<usize>) {
    let mut order = Order::new(producers);
    let mut b = Backoff::new();
    for _ in 0..total {
        loop {
            if let Some(v) = try_receive() {
                order.see(v);
                break;
            }
            b.wait();
        }
    }
}

fn vmig_spsc(items: usize) -> f64 {
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            send_each(0, n, 1, |v| tx.enqueue(nz(v)).is_ok());
        },
        |total| receive_each(total, 1, || rx.dequeue().map(NonZeroUsize::get)),
    )
}

fn vmig_mpsc(producers: usize, items: usize) -> f64 {
    let (tx, rx) = vmig::ring::mpsc::<NonZeroUsize>(CAP as u32).unwrap();
    run_threads(
        producers,
        items,
        move |p, n| send_each(p, n, producers, |v| tx.enqueue(nz(v)).is_ok()),
        |total| receive_each(total, producers, || rx.dequeue().map(NonZeroUsize::get)),
    )
}

fn vmig_spsc_burst(items: usize) -> f64 {
    let (tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            let mut buf = Vec::with_capacity(BURST);
            let mut k = 0;
            let mut b = Backoff::new();
            while k < n || !buf.is_empty() {
                while buf.len() < BURST && k < n {
                    buf.push(nz(item(0, k, 1)));
                    k += 1;
                }
                if tx.enqueue_burst(&mut buf) == 0 {
                    b.wait();
                }
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut out = Vec::with_capacity(BURST);
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                if rx.dequeue_burst(&mut out, BURST as u32) == 0 {
                    b.wait();
                }
                for v in out.drain(..) {
                    order.see(v.get());
                    got += 1;
                }
            }
        },
    )
}

/// The C ABI's ring entry points, as pointers the optimiser cannot see
/// through (`black_box`): with the bench's LTO the exported functions
/// would otherwise be inlined here, which a C caller (a call into
/// libvmig.so or libvmig.a) never gets. Each operation is a real call into
/// the exported function, handle checks and panic boundary included.
#[derive(Clone, Copy)]
struct CApi {
    enqueue: unsafe extern "C" fn(*mut vmig_ring_producer, *mut c_void) -> i32,
    enqueue_burst: unsafe extern "C" fn(*mut vmig_ring_producer, *const *mut c_void, u32) -> i32,
    dequeue: unsafe extern "C" fn(*mut vmig_ring_consumer, *mut *mut c_void) -> i32,
    dequeue_burst: unsafe extern "C" fn(*mut vmig_ring_consumer, *mut *mut c_void, u32) -> i32,
    ring_enqueue: unsafe extern "C" fn(*mut vmig_ring, *mut c_void) -> i32,
    ring_dequeue: unsafe extern "C" fn(*mut vmig_ring) -> *mut c_void,
}

fn c_api() -> CApi {
    black_box(CApi {
        enqueue: vmig_ring_producer_enqueue,
        enqueue_burst: vmig_ring_producer_enqueue_burst,
        dequeue: vmig_ring_consumer_dequeue,
        dequeue_burst: vmig_ring_consumer_dequeue_burst,
        ring_enqueue: vmig_ring_enqueue,
        ring_dequeue: vmig_ring_dequeue,
    })
}

/// A C handle on its way to the thread that uses it.
struct Owned<T>(*mut T);
// SAFETY: each handle is used by one thread at a time (the C rule): made
// here, taken by its producer thread once, freed there.
unsafe impl<T> Send for Owned<T> {}

fn as_item(v: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(v)
}

/// A ring through the C ABI with one producer handle per producer and the
/// consumer handle; the ring handle is freed at once (the handles hold it).
fn c_ring(producers: usize) -> (Mutex<Vec<Option<Owned<vmig_ring_producer>>>>, *mut vmig_ring_consumer) {
    let flags = if producers > 1 { VMIG_RING_MP } else { 0 };
    let ring = vmig_ring_new(CAP as u32, flags);
    assert!(!ring.is_null());
    // SAFETY: `ring` is live until the free below; the handles keep it.
    unsafe {
        let tx = (0..producers).map(|_| Some(Owned(vmig_ring_producer_new(ring)))).collect::<Vec<_>>();
        let rx = vmig_ring_consumer_new(ring);
        vmig_ring_free(ring);
        assert!(tx.iter().all(|h| !h.as_ref().unwrap().0.is_null()) && !rx.is_null());
        (Mutex::new(tx), rx)
    }
}

/// Single-item enqueue and dequeue through the C ABI's per-thread handles.
fn c_handles(producers: usize, items: usize) -> f64 {
    let api = c_api();
    let (tx, rx) = c_ring(producers);
    let rate = run_threads(
        producers,
        items,
        move |p, n| {
            let h = tx.lock().unwrap()[p].take().unwrap();
            // SAFETY: this thread's live handle; non-NULL items.
            send_each(p, n, producers, |v| unsafe { (api.enqueue)(h.0, as_item(v)) } == 0);
            // SAFETY: this thread's handle, not used again.
            unsafe { vmig_ring_producer_free(h.0) };
        },
        |total| {
            let mut out = std::ptr::null_mut();
            // SAFETY: the consumer handle, used by this thread only.
            receive_each(total, producers, || (unsafe { (api.dequeue)(rx, &mut out) } == 0).then(|| out.addr()))
        },
    );
    // SAFETY: every producer is done; the last handle frees the ring.
    unsafe { vmig_ring_consumer_free(rx) };
    rate
}

/// Bursts of [`BURST`] through the C ABI's handles (on the SP ring: one
/// reservation, one copy, one publish per call).
fn c_handles_burst(items: usize) -> f64 {
    let api = c_api();
    let (tx, rx) = c_ring(1);
    let rate = run_threads(
        1,
        items,
        move |_, n| {
            let h = tx.lock().unwrap()[0].take().unwrap();
            let mut buf = [std::ptr::null_mut(); BURST];
            let mut k = 0;
            let mut b = Backoff::new();
            while k < n {
                let len = BURST.min(n - k);
                for (i, slot) in buf[..len].iter_mut().enumerate() {
                    *slot = as_item(item(0, k + i, 1));
                }
                let mut done = 0;
                while done < len {
                    // SAFETY: this thread's live handle; `len - done` non-NULL items.
                    let m = unsafe { (api.enqueue_burst)(h.0, buf[done..].as_ptr(), (len - done) as u32) };
                    assert!(m >= 0);
                    if m == 0 {
                        b.wait();
                    }
                    done += m as usize;
                }
                k += len;
            }
            // SAFETY: this thread's handle, not used again.
            unsafe { vmig_ring_producer_free(h.0) };
        },
        |total| {
            let mut order = Order::new(1);
            let mut buf = [std::ptr::null_mut(); BURST];
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                // SAFETY: the consumer handle; `buf` holds BURST pointers.
                let m = unsafe { (api.dequeue_burst)(rx, buf.as_mut_ptr(), BURST as u32) };
                assert!(m >= 0);
                if m == 0 {
                    b.wait();
                }
                for v in &buf[..m as usize] {
                    order.see(v.addr());
                }
                got += m as usize;
            }
        },
    );
    // SAFETY: the producer is done; the last handle frees the ring.
    unsafe { vmig_ring_consumer_free(rx) };
    rate
}

// The C side of the "C inline" rows: benches/support/ring_inline_shim.c, a
// C caller's loops around include/vmig_ring_inline.h (compiled by build.rs,
// linked into the benches only). The handles are passed as `void *`: the
// opaque Rust types have no FFI layout of their own.
extern "C" {
    fn ring_bench_inline_produce(p: *mut c_void, n: usize) -> i32;
    fn ring_bench_inline_consume(c: *mut c_void, total: usize) -> i32;
    fn ring_bench_inline_pairs(p: *mut c_void, c: *mut c_void, pairs: usize) -> u64;
}

/// Single items through the header's inline fast path, from C: the
/// producer and consumer loops are C (`send_each`/`receive_each` with the
/// same [`Backoff`]), each item an inline enqueue and an inline dequeue
/// that call into libvmig only when the cached index says full or empty.
fn c_inline(items: usize) -> f64 {
    let (tx, rx) = c_ring(1);
    let rate = run_threads(
        1,
        items,
        move |_, n| {
            let h = tx.lock().unwrap()[0].take().unwrap();
            // SAFETY: this thread's live producer handle, on an SP ring.
            assert_eq!(unsafe { ring_bench_inline_produce(h.0.cast(), n) }, 0, "no inline fast path");
            // SAFETY: this thread's handle, not used again.
            unsafe { vmig_ring_producer_free(h.0) };
        },
        |total| {
            // SAFETY: the consumer handle, used by this thread only.
            let rc = unsafe { ring_bench_inline_consume(rx.cast(), total) };
            assert_eq!(rc, 0, "no inline fast path (-1) or lost, duplicated or reordered item (-2)");
        },
    );
    // SAFETY: the producer is done; the last handle frees the ring.
    unsafe { vmig_ring_consumer_free(rx) };
    rate
}

/// The ring handle shared by the threads (per-call C API).
#[derive(Clone, Copy)]
struct Shared(*mut vmig_ring);
// SAFETY: the per-call C API is made for concurrent producers (MP) and
// one consumer; each side's rule is kept by the scenario.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// The per-call C API (`vmig_ring_enqueue`/`vmig_ring_dequeue`), whose
/// cursors live in the shared ring header: what C callers had before the
/// handles.
fn c_per_call(producers: usize, items: usize) -> f64 {
    let api = c_api();
    let ring = Shared(vmig_ring_new(CAP as u32, if producers > 1 { VMIG_RING_MP } else { 0 }));
    assert!(!ring.0.is_null());
    let rate = run_threads(
        producers,
        items,
        move |p, n| {
            let ring = ring;
            // SAFETY: a live ring; one producer (SP) or an MP ring; non-NULL items.
            send_each(p, n, producers, |v| unsafe { (api.ring_enqueue)(ring.0, as_item(v)) } == 0)
        },
        |total| {
            receive_each(total, producers, || {
                // SAFETY: the only consumer.
                let v = unsafe { (api.ring_dequeue)(ring.0) };
                (!v.is_null()).then(|| v.addr())
            })
        },
    );
    // SAFETY: every thread is done with the ring.
    unsafe { vmig_ring_free(ring.0) };
    rate
}

fn rtrb_spsc(items: usize) -> f64 {
    let (tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            send_each(0, n, 1, |v| tx.push(v).is_ok());
        },
        |total| receive_each(total, 1, || rx.pop().ok()),
    )
}

fn rtrb_spsc_burst(items: usize) -> f64 {
    let (tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let tx = Mutex::new(Some(tx));
    run_threads(
        1,
        items,
        move |_, n| {
            let mut tx = tx.lock().unwrap().take().unwrap();
            let mut buf = [0usize; BURST];
            let mut k = 0;
            let mut b = Backoff::new();
            while k < n {
                let len = BURST.min(n - k);
                for (i, slot) in buf[..len].iter_mut().enumerate() {
                    *slot = item(0, k + i, 1);
                }
                let mut rest: &[usize] = &buf[..len];
                while !rest.is_empty() {
                    let (done, left) = tx.push_partial_slice(rest);
                    if done.is_empty() {
                        b.wait();
                    }
                    rest = left;
                }
                k += len;
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut buf = [0usize; BURST];
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                let (done, _) = rx.pop_partial_slice(&mut buf);
                if done.is_empty() {
                    b.wait();
                }
                for &v in done.iter() {
                    order.see(v);
                    got += 1;
                }
            }
        },
    )
}

fn arrayq(producers: usize, items: usize) -> f64 {
    let q = Arc::new(ArrayQueue::<usize>::new(CAP));
    let qp = q.clone();
    run_threads(
        producers,
        items,
        move |p, n| send_each(p, n, producers, |v| qp.push(v).is_ok()),
        |total| receive_each(total, producers, || q.pop()),
    )
}

/// ArrayQueue has no burst call: a burst is 32 single operations.
fn arrayq_burst(items: usize) -> f64 {
    let q = Arc::new(ArrayQueue::<usize>::new(CAP));
    let qp = q.clone();
    run_threads(
        1,
        items,
        move |_, n| {
            let mut b = Backoff::new();
            let mut k = 0;
            while k < n {
                let len = BURST.min(n - k);
                let mut i = 0;
                while i < len {
                    if qp.push(item(0, k + i, 1)).is_ok() {
                        i += 1;
                    } else {
                        b.wait();
                    }
                }
                k += len;
            }
        },
        |total| {
            let mut order = Order::new(1);
            let mut got = 0;
            let mut b = Backoff::new();
            while got < total {
                let mut moved = 0;
                while moved < BURST {
                    match q.pop() {
                        Some(v) => {
                            order.see(v);
                            moved += 1;
                        }
                        None => break,
                    }
                }
                if moved == 0 {
                    b.wait();
                }
                got += moved;
            }
        },
    )
}

fn channel(producers: usize, items: usize) -> f64 {
    let (tx, rx) = sync_channel::<usize>(CAP);
    let tx = Mutex::new(tx);
    run_threads(
        producers,
        items,
        move |p, n| {
            let tx = tx.lock().unwrap().clone();
            send_each(p, n, producers, |v| match tx.try_send(v) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                Err(e) => panic!("{e}"),
            });
        },
        |total| {
            receive_each(total, producers, || match rx.try_recv() {
                Ok(v) => Some(v),
                Err(TryRecvError::Empty) => None,
                Err(e) => panic!("{e}"),
            })
        },
    )
}

fn mutex_deque(producers: usize, items: usize) -> f64 {
    let q = Arc::new(Mutex::new(VecDeque::<usize>::with_capacity(CAP)));
    let qp = q.clone();
    run_threads(
        producers,
        items,
        move |p, n| {
            send_each(p, n, producers, |v| {
                let mut g = qp.lock().unwrap();
                let room = g.len() < CAP;
                if room {
                    g.push_back(v);
                }
                room
            })
        },
        |total| receive_each(total, producers, || q.lock().unwrap().pop_front()),
    )
}

/// Nanoseconds per enqueue+dequeue pair on one thread (no contention: the
/// cost of the instructions and fences themselves).
fn pair_latency(pairs: usize, mut push: impl FnMut(usize), mut pop: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    for k in 1..=pairs {
        push(k);
        let v = pop();
        debug_assert_eq!(v, k);
        black_box(v);
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

fn latencies(pairs: usize) -> Vec<(&'static str, f64)> {
    let (mut tx, rx) = vmig::ring::spsc::<NonZeroUsize>(CAP as u32).unwrap();
    let vmig_sp = pair_latency(
        pairs,
        |v| tx.enqueue(nz(v)).unwrap(),
        || rx.dequeue().unwrap().get(),
    );
    let (tx, rx) = vmig::ring::mpsc::<NonZeroUsize>(CAP as u32).unwrap();
    let vmig_mp = pair_latency(
        pairs,
        |v| tx.enqueue(nz(v)).unwrap(),
        || rx.dequeue().unwrap().get(),
    );
    let api = c_api();
    let (tx, rx) = c_ring(1);
    let h = tx.lock().unwrap()[0].take().unwrap();
    let mut out = std::ptr::null_mut();
    let vmig_c = pair_latency(
        pairs,
        // SAFETY: this thread's live handles; non-NULL items.
        |v| assert_eq!(unsafe { (api.enqueue)(h.0, as_item(v)) }, 0),
        || {
            // SAFETY: as above.
            assert_eq!(unsafe { (api.dequeue)(rx, &mut out) }, 0);
            out.addr()
        },
    );
    // SAFETY: handles of this thread, not used again; the last frees the ring.
    unsafe {
        vmig_ring_producer_free(h.0);
        vmig_ring_consumer_free(rx);
    }
    let (tx, rx) = c_ring(1);
    let h = tx.lock().unwrap()[0].take().unwrap();
    let start = Instant::now();
    // SAFETY: this thread's live handles of an SP ring.
    let sum = unsafe { ring_bench_inline_pairs(h.0.cast(), rx.cast(), pairs) };
    let vmig_inline = start.elapsed().as_nanos() as f64 / pairs as f64;
    assert_eq!(sum, (pairs as u64) * (pairs as u64 + 1) / 2, "C inline pairs failed");
    // SAFETY: handles of this thread, not used again; the last frees the ring.
    unsafe {
        vmig_ring_producer_free(h.0);
        vmig_ring_consumer_free(rx);
    }
    let (mut tx, mut rx) = rtrb::RingBuffer::<usize>::new(CAP);
    let rtrb = pair_latency(pairs, |v| tx.push(v).unwrap(), || rx.pop().unwrap());
    let q = ArrayQueue::<usize>::new(CAP);
    let aq = pair_latency(pairs, |v| q.push(v).unwrap(), || q.pop().unwrap());
    let (tx, rx) = sync_channel::<usize>(CAP);
    let ch = pair_latency(
        pairs,
        |v| tx.try_send(v).unwrap(),
        || rx.try_recv().unwrap(),
    );
    let q = Mutex::new(VecDeque::<usize>::with_capacity(CAP));
    let mx = pair_latency(
        pairs,
        |v| q.lock().unwrap().push_back(v),
        || q.lock().unwrap().pop_front().unwrap(),
    );
    vec![
        ("vmig spsc", vmig_sp),
        ("vmig mpsc", vmig_mp),
        ("vmig C ABI handles (spsc)", vmig_c),
        ("vmig C inline (spsc)", vmig_inline),
        ("rtrb", rtrb),
        ("crossbeam ArrayQueue", aq),
        ("std sync_channel", ch),
        ("Mutex<VecDeque>", mx),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One queue under test: its name and a run returning items per second.
type Run<'a> = (&'static str, &'a dyn Fn(usize) -> f64);

/// Runs every queue `p.reps` times, interleaved (A B C A B C ...), so a
/// slow drift in machine load touches all of them alike; returns each
/// queue's rate in every round, in the order given.
fn measure(p: &Params, runs: &[Run]) -> Vec<(&'static str, Vec<f64>)> {
    let mut results = vec![Vec::new(); runs.len()];
    for _ in 0..p.reps {
        for (i, (_, run)) in runs.iter().enumerate() {
            results[i].push(run(p.items));
        }
    }
    runs.iter().zip(results).map(|((name, _), r)| (*name, r)).collect()
}

/// Median over the rounds of `a[r] / b[r]`: each round's contenders ran
/// back to back, so the per-round ratio cancels most of the load drift.
fn ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// Prints one throughput table: each queue's median rate, and for each of
/// the first `subjects` rows (vmig's) its median per-round ratio against
/// every other row.
fn table(title: &str, rows: &[(&str, Vec<f64>)], subjects: usize) {
    println!("\n{title}");
    print!("  {:<34} {:>9}", "queue", "Mitems/s");
    for (name, _) in &rows[..subjects] {
        print!(" {:>22}", format!("{name} ratio"));
    }
    println!();
    for (name, v) in rows {
        print!("  {:<34} {:>9.1}", name, median(v.clone()) / 1e6);
        for (subject, s) in &rows[..subjects] {
            let cell = if subject == name { String::from("-") } else { format!("{:.2}x", ratio(s, v)) };
            print!(" {:>22}", cell);
        }
        println!();
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    // Optional section filters: `cargo bench --bench ring -- spsc mpsc placement burst latency`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |section: &str| filters.is_empty() || filters.iter().any(|f| f == section);
    let p = if full {
        Params {
            items: 4_000_000,
            pairs: 20_000_000,
            reps: 7,
        }
    } else {
        Params {
            items: 20_000,
            pairs: 10_000,
            reps: 1,
        }
    };
    println!(
        "ring bench: capacity {CAP} for every queue, {} items per run, median of {} runs{}",
        p.items,
        p.reps,
        if full {
            ""
        } else {
            " (quick mode: numbers meaningless)"
        }
    );

    if want("spsc") {
        table(
            "SPSC throughput",
            &measure(
                &p,
                &[
                    ("vmig C inline (vmig_ring_inline.h)", &c_inline),
                    ("vmig C ABI handles", &|n| c_handles(1, n)),
                    ("vmig Rust API", &vmig_spsc),
                    ("rtrb", &rtrb_spsc),
                    ("crossbeam ArrayQueue", &|n| arrayq(1, n)),
                    ("std sync_channel", &|n| channel(1, n)),
                    ("Mutex<VecDeque>", &|n| mutex_deque(1, n)),
                    ("vmig C ABI per-call (vmig_ring_*)", &|n| c_per_call(1, n)),
                ],
            ),
            3,
        );
    }
    if want("mpsc") {
        table(
            "MPSC throughput, 2 producers",
            &measure(
                &p,
                &[
                    ("vmig C ABI handles", &|n| c_handles(2, n)),
                    ("vmig Rust API", &|n| vmig_mpsc(2, n)),
                    ("crossbeam ArrayQueue", &|n| arrayq(2, n)),
                    ("std sync_channel", &|n| channel(2, n)),
                    ("Mutex<VecDeque>", &|n| mutex_deque(2, n)),
                    ("vmig C ABI per-call (vmig_ring_*)", &|n| c_per_call(2, n)),
                ],
            ),
            2,
        );
    }
    if want("placement") {
        if affinity::allowed_cpus().len() < 2 {
            println!("\nplacement: skipped, fewer than 2 CPUs allowed");
        } else {
            println!("\nPinned placements (threads -> CPUs): Mitems/s, and vmig's median per-round ratio");
            let sp: &[Run] = &[("C ABI", &|n| c_handles(1, n)), ("Rust", &vmig_spsc), ("rtrb", &rtrb_spsc)];
            let mp: &[Run] = &[("C ABI", &|n| c_handles(2, n)), ("Rust", &|n| vmig_mpsc(2, n)), ("ArrayQueue", &|n| arrayq(2, n))];
            let row = |name: &str, cpus: &[usize], runs: &[Run]| {
                let r = pinned(cpus, || measure(&p, runs));
                let m = |i: usize| median(r[i].1.clone()) / 1e6;
                println!(
                    "  {:<46} C ABI {:>6.1} ({:.2}x)  Rust {:>6.1} ({:.2}x)  {} {:>6.1}",
                    name,
                    m(0),
                    ratio(&r[0].1, &r[2].1),
                    m(1),
                    ratio(&r[1].1, &r[2].1),
                    r[2].0,
                    m(2)
                );
            };
            row("SPSC: producer CPU 0, consumer CPU 1", &[0, 1], sp);
            row("MPSC: producers CPU 0 and 1, consumer CPU 1", &[0, 1, 1], mp);
            row("MPSC: producers both CPU 0, consumer CPU 1", &[0, 0, 1], mp);
        }
    }
    if want("burst") {
        table(
            &format!("SPSC burst-of-{BURST} throughput"),
            &measure(
                &p,
                &[
                    ("vmig C ABI handles burst", &c_handles_burst),
                    ("vmig Rust API burst", &vmig_spsc_burst),
                    ("rtrb push/pop_partial_slice", &rtrb_spsc_burst),
                    ("crossbeam ArrayQueue x32", &arrayq_burst),
                    ("vmig C ABI handles single ops", &|n| c_handles(1, n)),
                ],
            ),
            2,
        );
    }
    if !want("latency") {
        return;
    }

    let runs: Vec<Vec<(&str, f64)>> = (0..p.reps).map(|_| latencies(p.pairs)).collect();
    println!(
        "\nSingle-thread enqueue+dequeue pair latency ({} pairs)",
        p.pairs
    );
    println!(
        "  {:<28} {:>14} {:>12}",
        "queue", "ns/pair", "vmig spsc (Rust) ratio"
    );
    let med = |i: usize| median(runs.iter().map(|r| r[i].1).collect());
    let vmig = med(0);
    for (i, (name, _)) in runs[0].iter().enumerate() {
        let v = med(i);
        // Lower is better: the ratio is baseline time / vmig time.
        let ratio = if i == 0 {
            String::from("-")
        } else {
            format!("{:.2}x", v / vmig)
        };
        println!("  {:<28} {:>14.2} {:>12}", name, v, ratio);
    }
}
